"""The Dockerfile's builder stage, reproduced without a Docker engine.

The build context is made the way Docker makes it: every file of the repository's directory,
less what `.dockerignore` excludes, with Docker's pattern rules (moby/patternmatcher: patterns
anchored at the context root, `*` and `?` within one path element, `**` across elements, a
pattern that matches a directory excludes everything beneath it, `!` exceptions, the last
matching line wins). Then the stages the final image copies from run their instructions in
order in a scratch root directory: COPY from that context, WORKDIR, ENV, and RUN through
`/bin/sh -c`, with this machine's toolchain standing in for the `rust` base image. `cargo build`
runs as `cargo check` with the same arguments (every file the build reads, migrations and
embedded templates included, is still resolved) into a persistent target directory under
target/, and leaves a stand-in for each binary where the build would have put it, so the
steps after it and the final stage's `COPY --from` are checked too.

A RUN step that names an absolute path cannot be reproduced in a scratch directory and is
refused; cache mounts (`RUN --mount=type=cache`) start empty, as on a fresh builder, and are
hidden from the layer again after the step, as in Docker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# Kept between runs: the checked dependencies (a cold check takes minutes, a warm one seconds)
# and the scratch root, at a fixed path so that the workspace crates keep their fingerprints.
WORK = TARGET / "docker-builder"

# Paths of the rust base image that this machine's own cargo installation stands in for.
BASE_IMAGE_CARGO_HOME = ("/usr/local/cargo/registry", "/usr/local/cargo/git")

# The most the build context may carry; today it is about 1.3 MB in about 100 files.
CONTEXT_MAX_BYTES = 4_000_000
CONTEXT_MAX_FILES = 400


# --- .dockerignore ----------------------------------------------------------------------------


def read_dockerignore(text: str) -> list[str]:
    """The patterns of a .dockerignore, normalised as Docker's ignorefile.ReadAll does."""
    patterns = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = os.path.normpath(line)
            if line.startswith("//"):
                line = "/" + line.lstrip("/")
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


@dataclass
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def compile_pattern(text: str) -> re.Pattern[str]:
    """A pattern as a regular expression, following patternmatcher's compile()."""
    out = "^"
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "*":
            if text[i + 1 : i + 2] == "*":
                i += 1
                if text[i + 1 : i + 2] == "/":
                    i += 1
                # `**` at the end accepts everything; elsewhere any number of elements.
                out += ".*" if i + 1 == len(text) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".+()|{}$":
            out += "\\" + ch
        elif ch == "\\":
            if i + 1 < len(text):
                i += 1
                out += re.escape(text[i])
            else:
                out += "\\\\"
        elif ch in "[]":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def matcher(patterns: list[str]) -> list[Pattern]:
    compiled = []
    for p in patterns:
        p = os.path.normpath(p.strip())
        exclusion = p.startswith("!")
        if exclusion:
            assert len(p) > 1, 'illegal exclusion pattern: "!"'
            p = p[1:]
        compiled.append(Pattern(p, exclusion, compile_pattern(p)))
    return compiled


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """patternmatcher's MatchesOrParentMatches: the path or one of its parents matches the
    last applicable pattern, and that pattern is not an exception."""
    parents = path.split("/")[:-1]
    prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    matched = False
    for p in patterns:
        if p.exclusion != matched:
            continue
        match = bool(p.regex.match(path)) or any(p.regex.match(d) for d in prefixes)
        if match:
            matched = not p.exclusion
    return matched


def may_hold_exceptions(directory: str, patterns: list[Pattern]) -> bool:
    """Whether an excluded directory can hold a path an exception lets back in (BuildKit
    walks such directories and skips the others)."""
    parts = directory.split("/")
    for p in patterns:
        if not p.exclusion:
            continue
        if "**" in p.text:
            return True
        elements = p.text.split("/")
        if len(elements) > len(parts) and all(
            compile_pattern(e).match(d) for e, d in zip(elements, parts)
        ):
            return True
    return False


def build_context(source: Path, destination: Path) -> list[str]:
    """Copies what Docker would send as the build context; returns its files' paths."""
    ignore = source / ".dockerignore"
    patterns = matcher(read_dockerignore(ignore.read_text()) if ignore.exists() else [])
    files = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        rel_dir = os.path.relpath(dirpath, source)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            rel = rel_dir + d
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)
            elif not excluded(rel, patterns):
                (destination / rel).mkdir(parents=True, exist_ok=True)
                kept.append(d)
            elif may_hold_exceptions(rel, patterns):
                kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            rel = rel_dir + f
            if excluded(rel, patterns):
                continue
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.islink(source / rel):
                os.symlink(os.readlink(source / rel), target)
            else:
                shutil.copy2(source / rel, target)
            files.append(rel)
    return files


# --- the Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    flags: list[str]
    args: str
    line: int

    def __str__(self) -> str:
        return f"line {self.line}: " + " ".join([self.keyword, *self.flags, self.args])


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions as Docker's parser reads them: parser directives and comment lines
    dropped (comments and empty lines inside a continued instruction too), a line ending in a
    backslash joined to the next with the backslash removed."""
    lines = text.splitlines()
    logical: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and current):
            continue
        if not stripped:
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(raw.rstrip()[:-1])
            continue
        current.append(raw)
        logical.append((start, "".join(current).strip()))
        current = []
    assert not current, "the Dockerfile ends inside a continued instruction"

    stages: list[Stage] = []
    for number, text_ in logical:
        keyword, _, rest = text_.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        assert stages, f"line {number}: {keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, rest, number))
    return stages


def flag_values(flags: list[str], name: str) -> list[str]:
    return [f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}=")]


def json_or_words(args: str) -> list[str]:
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


# --- running a stage --------------------------------------------------------------------------


CARGO_SHIM = r'''#!{python}
"""Stands in for cargo in the builder stage: `cargo build` runs as `cargo check` with the same
arguments into a persistent target directory, then leaves an executable stand-in for each
`--bin` where the build would have put it. Other subcommands pass through."""
import json, os, subprocess, sys

real, target_dir, offline, record = {real!r}, {target_dir!r}, {offline!r}, {record!r}
args = sys.argv[1:]
if not args or args[0] != "build":
    sys.exit(subprocess.call([real] + args))
args = ["check"] + args[1:]
bins, profile, out_dir = [], "debug", os.environ.get("CARGO_TARGET_DIR", "target")
i = 1
while i < len(args):
    a = args[i]
    if a == "--release":
        profile = "release"
    elif a == "--bin":
        bins.append(args[i + 1])
    elif a.startswith("--bin="):
        bins.append(a.split("=", 1)[1])
    elif a == "--profile":
        profile = args[i + 1]
    elif a == "--target-dir":
        out_dir = args[i + 1]
    i += 1
if not bins:
    sys.exit("the builder-stage test needs `cargo build --bin NAME` to know what it produces")
env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
if offline:
    args.append("--offline")
# What was checked, for the test: the workspace crates' artifacts (their dep-info files list
# every file rustc read) and build script runs (their output names the files they read).
args.append("--message-format=json-render-diagnostics")
proc = subprocess.Popen([real] + args, env=env, stdout=subprocess.PIPE, text=True)
with open(record, "a") as out:
    for line in proc.stdout:
        message = json.loads(line)
        if message.get("reason") in (
            "compiler-artifact",
            "build-script-executed",
        ) and message["package_id"].startswith("path+"):
            out.write(line)
code = proc.wait()
if code == 0:
    for b in bins:
        path = os.path.join(out_dir, profile, b)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho 'stand-in for " + b + " (cargo check ran instead)'\n")
        os.chmod(path, 0o755)
sys.exit(code)
'''


class StageError(AssertionError):
    pass


@dataclass
class Builder:
    """A stage's filesystem: a scratch directory standing for /."""

    rootfs: Path
    context: Path
    shim_dir: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def host(self, path: str) -> Path:
        absolute = os.path.normpath(os.path.join(self.workdir, path))
        return self.rootfs / absolute.lstrip("/")

    def run(self, stage: Stage) -> None:
        for ins in stage.instructions:
            handler = getattr(self, f"do_{ins.keyword.lower()}", None)
            if handler is None:
                raise StageError(f"{ins}: not reproduced by this test")
            handler(ins)

    def do_workdir(self, ins: Instruction) -> None:
        self.workdir = os.path.normpath(os.path.join(self.workdir, ins.args))
        self.host(".").mkdir(parents=True, exist_ok=True)

    def do_env(self, ins: Instruction) -> None:
        words = shlex.split(ins.args)
        if len(words) == 2 and "=" not in words[0]:
            self.env[words[0]] = words[1]
        else:
            for w in words:
                key, _, value = w.partition("=")
                self.env[key] = value

    def do_arg(self, ins: Instruction) -> None:
        key, sep, value = ins.args.partition("=")
        if sep:
            self.env.setdefault(key, value)

    def do_copy(self, ins: Instruction) -> None:
        for f in ins.flags:
            if not f.startswith(("--chown=", "--chmod=", "--link")):
                raise StageError(f"{ins}: {f} is not reproduced by this test")
        words = json_or_words(ins.args)
        sources, dest = words[:-1], words[-1]
        expanded: list[Path] = []
        for s in sources:
            rel = os.path.normpath(s.lstrip("/"))
            if rel.startswith(".."):
                raise StageError(f"{ins}: {s} is outside the build context")
            matches = sorted(self.context.glob(rel)) if any(c in rel for c in "*?[") else []
            if not matches:
                path = self.context / rel if rel != "." else self.context
                if not path.exists() and not path.is_symlink():
                    raise StageError(
                        f"{ins}: {s} is not in the build context (.dockerignore leaves it out)"
                    )
                matches = [path]
            expanded.extend(matches)
        into_dir = dest.endswith("/") or len(expanded) > 1
        if len(sources) > 1 and not dest.endswith("/"):
            raise StageError(f"{ins}: with more than one source the destination must end in /")
        target = self.host(dest)
        for src in expanded:
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            else:
                to = target / src.name if into_dir or target.is_dir() else target
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, to, follow_symlinks=False)
        self.log.append(str(ins))

    def do_run(self, ins: Instruction) -> None:
        mounts = []
        for f in ins.flags:
            if not f.startswith("--mount="):
                raise StageError(f"{ins}: {f} is not reproduced by this test")
            options = dict(o.partition("=")[::2] for o in f[len("--mount=") :].split(","))
            if options.get("type") != "cache":
                raise StageError(f"{ins}: only cache mounts are reproduced, not {f}")
            mount_target = options.get("target") or options.get("dst") or options["destination"]
            mount_target = os.path.normpath(os.path.join(self.workdir, mount_target))
            if mount_target not in BASE_IMAGE_CARGO_HOME:
                mounts.append(self.host(mount_target))
        command = json_or_words(ins.args) if ins.args.startswith("[") else None
        text = " ".join(command) if command else ins.args
        absolute = [w for w in shlex.split(text) if w.startswith("/")]
        if absolute:
            raise StageError(
                f"{ins}: names absolute paths {absolute}, which a scratch directory cannot "
                "stand in for; use paths relative to WORKDIR"
            )
        hidden = []
        for m in mounts:
            # A cache mount hides what the layer has at its target, and starts empty here.
            if m.exists():
                aside = m.with_name(m.name + ".layer")
                m.rename(aside)
                hidden.append((m, aside))
            m.mkdir(parents=True)
        env = {**os.environ, **self.env, "PATH": f"{self.shim_dir}:{os.environ['PATH']}"}
        argv = command if command else ["/bin/sh", "-c", ins.args]
        result = subprocess.run(
            argv, cwd=self.host("."), env=env, capture_output=True, text=True, timeout=3600
        )
        for m in mounts:
            shutil.rmtree(m)
        for m, aside in hidden:
            aside.rename(m)
        self.log.append(f"{ins}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise StageError(
                f"{ins}: exit status {result.returncode}\n{result.stdout}{result.stderr}"
            )


def offline_possible() -> bool:
    """Whether the registry cache holds every crate of Cargo.lock for this machine."""
    host = subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True
    ).stdout
    triple = re.search(r"^host: (\S+)", host, re.M).group(1)
    fetch = subprocess.run(
        ["cargo", "fetch", "--locked", "--offline", "--target", triple],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return fetch.returncode == 0


@dataclass
class BuildResult:
    context_files: list[str]
    stages: list[Stage]
    rootfs: dict[str, Path]
    error: StageError | None


def build_stages(source: Path, work: Path) -> BuildResult:
    """Makes the context of `source`, then runs every stage the final stage copies from."""
    stages = parse_dockerfile((source / "Dockerfile").read_text())
    final = stages[-1]
    needed = [
        v for ins in final.instructions if ins.keyword == "COPY"
        for v in flag_values(ins.flags, "from")
    ]
    for scratch in ("context", "rootfs", "bin"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    (work / "artifacts.jsonl").write_text("")
    (work / "context").mkdir(parents=True)
    files = build_context(source, work / "context")

    real_cargo = shutil.which("cargo")
    assert real_cargo, "cargo is not on PATH"
    shim_dir = work / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "cargo"
    shim.write_text(
        CARGO_SHIM.format(
            python=sys.executable,
            real=real_cargo,
            target_dir=str(work / "target"),
            offline=offline_possible(),
            record=str(work / "artifacts.jsonl"),
        )
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)

    by_name = {s.name: s for s in stages if s.name}
    rootfs = {}
    for name in dict.fromkeys(needed):
        stage = by_name.get(name)
        assert stage, f"COPY --from={name}: no stage of that name"
        assert stage.base.startswith("rust:"), (
            f"stage {name} is FROM {stage.base}; only rust images are stood in for"
        )
        builder = Builder(rootfs=work / "rootfs" / name, context=work / "context", shim_dir=shim_dir)
        builder.rootfs.mkdir(parents=True)
        rootfs[name] = builder.rootfs
        try:
            builder.run(stage)
        except StageError as err:
            return BuildResult(files, stages, rootfs, err)
    return BuildResult(files, stages, rootfs, None)


@pytest.fixture(scope="module")
def build() -> BuildResult:
    WORK.mkdir(parents=True, exist_ok=True)
    return build_stages(ROOT, WORK)


# --- tests ------------------------------------------------------------------------------------


def test_dockerignore_patterns_follow_dockers_rules():
    patterns = matcher(read_dockerignore("# c\n*\n!src\n/docs/**/*.md\n!docs/keep.md\n  \n"))
    assert excluded("README.md", patterns)
    assert excluded("fuzz/corpus/a/b", patterns)
    assert not excluded("src/main.rs", patterns)
    assert not excluded("src/web/templates/base.html", patterns)
    # `*` stays within one element, but excluding a directory excludes what is beneath it.
    assert excluded("docs/a/b/c.md", patterns)
    assert not excluded("docs/keep.md", patterns)
    assert may_hold_exceptions("docs", patterns)
    assert not may_hold_exceptions("fuzz", patterns)
    only_top = matcher(["*.md"])
    assert excluded("README.md", only_top) and not excluded("docs/x.md", only_top)
    anywhere = matcher(["**/*.md"])
    assert excluded("README.md", anywhere) and excluded("docs/a/x.md", anywhere)
    # The last matching line wins.
    assert excluded("src/x", matcher(["!src", "src"]))
    assert not excluded("src/x", matcher(["src", "!src/x"]))


def test_builder_stage_runs_from_the_build_context(build):
    assert build.error is None, f"{build.error}"


def test_final_stage_copies_what_the_builder_stage_produced(build):
    assert build.error is None, f"{build.error}"
    copies = [
        (flag_values(ins.flags, "from")[0], json_or_words(ins.args))
        for ins in build.stages[-1].instructions
        if ins.keyword == "COPY" and flag_values(ins.flags, "from")
    ]
    assert copies
    for stage, words in copies:
        for source in words[:-1]:
            path = build.rootfs[stage] / source.lstrip("/")
            assert path.is_file(), f"COPY --from={stage} {source}: the stage has no such file"


def test_build_context_holds_only_what_the_build_reads(build):
    allowed = (
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto/",
        "connectors/Cargo.toml",
        "connectors/src/",
        "benches/load/Cargo.toml",
        "src/",
        "migrations/",
        "config/dev.yaml",
    )
    stray = [f for f in build.context_files if not f.startswith(allowed) and f not in allowed]
    assert not stray, f"files the build does not read are in the build context: {stray[:20]}"
    for left_out in ("fuzz/", "tests/", "benches/micro.rs", "benches/load/src/", "target/"):
        assert not any(f.startswith(left_out) for f in build.context_files), left_out
    size = sum((WORK / "context" / f).lstat().st_size for f in build.context_files)
    assert len(build.context_files) <= CONTEXT_MAX_FILES, len(build.context_files)
    assert size <= CONTEXT_MAX_BYTES, size


def test_every_source_file_in_the_context_is_one_the_build_reads(build):
    """The check's dep-info lists every file rustc read, include_str! and migrations too."""
    assert build.error is None, f"{build.error}"
    context_files = set(build.context_files)
    read = set()
    for line in (WORK / "artifacts.jsonl").read_text().splitlines():
        artifact = json.loads(line)
        if artifact.get("reason") == "build-script-executed":
            # build.rs reads proto/api.proto through protoc, which no dep-info sees; the run's
            # output names it (rerun-if-changed, relative to the package).
            output = Path(artifact["out_dir"]).parent / "output"
            for entry in output.read_text().splitlines() if output.exists() else []:
                for prefix in ("cargo:rerun-if-changed=", "cargo::rerun-if-changed="):
                    if entry.startswith(prefix) and entry[len(prefix):] in context_files:
                        read.add(entry[len(prefix):])
            continue
        for built in artifact["filenames"]:
            if "custom-build" in artifact["target"]["kind"]:
                # The build script's dep-info sits beside it, named after its hashed copy.
                depinfos = sorted(Path(built).parent.glob("build_script_build-*.d"))
            else:
                depinfo = Path(built).with_suffix(".d")
                depinfos = [depinfo.with_name(depinfo.name.removeprefix("lib"))]
            entries = [e for d in depinfos for e in d.read_text().splitlines()]
            for entry in entries:
                if ":" not in entry:
                    continue
                # Workspace crates' files are relative to the workspace; tracked files
                # (sqlx's migrations) are absolute, as of the check that made the file: cargo
                # reuses a check made where the workspace was before (its fingerprints are
                # relative to the package), so an absolute path may name an older root.
                for word in entry.split(":", 1)[1].split():
                    parts = Path(word).parts
                    for i in range(len(parts)):
                        relative = "/".join(parts[i:]).lstrip("/")
                        if relative in context_files:
                            read.add(relative)
                            break
    assert read, "no dep-info recorded"
    sources = [
        f for f in build.context_files if not f.endswith(("Cargo.toml", "Cargo.lock"))
    ]
    unread = sorted(set(sources) - read)
    assert not unread, f"in the build context but not read by the build: {unread}"


def test_image_runs_as_non_root_with_the_config_path_the_chart_mounts():
    import yaml

    final = parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    users = [ins.args for ins in final.instructions if ins.keyword == "USER"]
    assert users and users[-1].split(":")[0] == "65532", users
    (cmd,) = [json_or_words(ins.args) for ins in final.instructions if ins.keyword == "CMD"]
    assert cmd[:2] == ["serve", "--config"]
    deployment = (ROOT / "charts/lanyard/templates/deployment.yaml").read_text()
    assert f"- {cmd[2]}" in deployment, f"the chart does not run with --config {cmd[2]}"
    values = yaml.safe_load((ROOT / "charts/lanyard/values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    mount_dir = re.search(r"name: config\n\s+mountPath: (\S+)", deployment).group(1)
    assert os.path.dirname(cmd[2]) == mount_dir
