//! Threads that sign tokens, one per core, all fed from one queue.
//!
//! An RS256 signature takes 0.3-1 ms of CPU: on a runtime thread it would hold up every
//! request queued behind it, including ones in the middle of a database transaction. Tokio's
//! blocking pool would take it, but there each signature is a task handed to a thread that
//! has just gone to sleep, so every signature costs two more thread switches than it must.
//! These threads take the next signature from the queue as soon as they finish one, and
//! sleep only when the queue is empty. They are started at the first signature and end
//! when their [`Signers`] is dropped.

use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(crate) struct Signers {
    queue: OnceLock<Sender<Job>>,
}

impl Signers {
    /// Queues `job` for the next free signing thread. Err when no thread could be started.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> Result<(), String> {
        let queue = match self.queue.get() {
            Some(queue) => queue,
            None => {
                let started = start()?;
                // Two first signatures at once: one set of threads wins, and the other's
                // end as soon as their queue is dropped here.
                self.queue.get_or_init(|| started)
            }
        };
        queue
            .send(Box::new(job))
            .map_err(|_| "every signing thread has stopped".to_string())
    }
}

fn start() -> Result<Sender<Job>, String> {
    let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut started = 0;
    for _ in 0..threads {
        let jobs = jobs.clone();
        if std::thread::Builder::new()
            .name("lanyard-sign".into())
            .spawn(move || sign_until_closed(jobs))
            .is_ok()
        {
            started += 1;
        }
    }
    if started == 0 {
        return Err("no signing thread could be started".into());
    }
    Ok(queue)
}

fn sign_until_closed(jobs: Receiver<Job>) {
    for job in jobs {
        // A panic in one signature must not take the thread with it; the caller sees its
        // answer channel closed.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_job_and_survives_panics() {
        let signers = Signers::default();
        // More panics than threads: without the catch, every thread would be gone after
        // the first ones, and the jobs after them would never run.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..2 * threads {
            signers.run(|| panic!("a failing signature")).unwrap();
        }
        let (done, results) = std::sync::mpsc::channel();
        for i in 0..100 {
            let done = done.clone();
            signers.run(move || done.send(i).unwrap()).unwrap();
        }
        let mut seen: Vec<i32> = (0..100)
            .map(|_| {
                results
                    .recv_timeout(std::time::Duration::from_secs(5))
                    .expect("a job did not run")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
