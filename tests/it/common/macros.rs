//! Test generators shared by the areas.

/// Runs each named `async fn` of the calling module on both storage backends, as the tests
/// `sqlite::<name>` and `postgres::<name>`. A test takes a [`server::Backend`]; with
/// `fixture = Type::open;` first, it takes `&Type` from `Type::open(backend).await`, and a
/// `None` from there skips it (PostgreSQL unreachable outside CI).
macro_rules! on_both {
    (fixture = $fixture:ident :: $open:ident; $($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $crate::common::server::Backend::Sqlite;
                let Some(fixture) = super::$fixture::$open(backend).await else { return };
                super::$name(&fixture).await;
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $crate::common::server::Backend::Postgres;
                let Some(fixture) = super::$fixture::$open(backend).await else { return };
                super::$name(&fixture).await;
            })+
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::server::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::server::Backend::Postgres).await }
            )*
        }
    };
}
