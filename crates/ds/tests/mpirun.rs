//! ds's MPI collectives under a real `mpirun`: the conformance suite's collective cases at 1
//! to 4 ranks (oversubscribed), and the three guards (a mismatched call, a rank that never
//! arrives, a rank that dies), each asserting exit codes, messages, time and that no process
//! is left behind.
//!
//! Needs Open MPI's `mpirun` on PATH (`scripts/test.sh` installs it); without it these tests
//! fail saying what to install, and are never counted as passed. The checks run as
//! `ds conformance --comm mpi`; built with `--features mpi`.
#![cfg(feature = "mpi")]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DS: &str = env!("CARGO_BIN_EXE_ds");

/// Every guard test must finish well within this.
const GUARD_LIMIT: Duration = Duration::from_secs(60);

fn mpirun() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("mpirun"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "NOT RUN: mpirun is not on PATH. Install Open MPI (Debian: apt-get install \
                 openmpi-bin libopenmpi-dev) or run scripts/test.sh, which installs it"
            )
        })
}

struct Run {
    output: Output,
    elapsed: Duration,
    marker: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn explain(&self) -> String {
        format!(
            "exit {:?} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.elapsed.as_secs_f64(),
            self.stdout(),
            self.stderr()
        )
    }
}

/// Runs `ds conformance --comm mpi --mode MODE` on `ranks` ranks with extra environment `env`.
fn launch(ranks: usize, mode: &str, env: &[(&str, &str)], test: &str) -> Run {
    let marker = format!("ds-test-marker-{}-{test}", std::process::id());
    let mut cmd = Command::new(mpirun());
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for (k, v) in env {
        cmd.args(["-x", &format!("{k}={v}")]);
    }
    cmd.args([
        DS,
        "conformance",
        "--comm",
        "mpi",
        "--mode",
        mode,
        "--tag",
        &marker,
    ]);
    let start = Instant::now();
    let output = cmd.output().expect("mpirun starts");
    Run {
        output,
        elapsed: start.elapsed(),
        marker,
    }
}

/// Processes whose command line carries `marker`, waiting up to five seconds for the
/// launcher's clean-up to finish.
fn leftovers(marker: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<String> = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .filter(|c| c.contains(marker))
                    .collect()
            })
            .unwrap_or_default();
        if found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_collectives_pass(ranks: usize, env: &[(&str, &str)], test: &str) {
    let run = launch(ranks, "collectives", env, test);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let out = run.stdout();
    for rank in 0..ranks {
        let line = format!("rank {rank}: 288 collective cases passed on {ranks} rank(s)");
        assert!(out.contains(&line), "missing {line:?}\n{}", run.explain());
    }
    let found = format!("(OMPI_COMM_WORLD_SIZE={ranks}), library Open MPI");
    assert_eq!(
        run.stderr().matches(&found).count(),
        ranks,
        "{}",
        run.explain()
    );
}

#[test]
fn collectives_pass_on_1_rank() {
    assert_collectives_pass(1, &[], "c1");
}

#[test]
fn collectives_pass_on_2_ranks() {
    assert_collectives_pass(2, &[], "c2");
}

#[test]
fn collectives_pass_on_3_ranks() {
    assert_collectives_pass(3, &[], "c3");
}

#[test]
fn collectives_pass_on_4_ranks() {
    assert_collectives_pass(4, &[], "c4");
}

#[test]
fn collectives_pass_when_transfers_are_split_into_small_chunks() {
    // 65,537 elements over 3 ranks in pieces of 1000: every transfer takes 22 rounds.
    assert_collectives_pass(3, &[("DS_MPI_CHUNK_ELEMENTS", "1000")], "chunks");
}

#[test]
fn collectives_pass_with_the_guards_off() {
    // No handshake: barriers are MPI_Barrier, data goes straight to MPI.
    let env = [
        ("DS_VALIDATE_COLLECTIVES", "0"),
        ("DS_COLLECTIVE_TIMEOUT_SECS", "0"),
    ];
    assert_collectives_pass(4, &env, "unguarded");
}

#[test]
fn without_a_launcher_the_world_is_one_rank() {
    let output = Command::new(DS)
        .args(["conformance", "--comm", "mpi"])
        .output()
        .expect("ds starts");
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        err.contains("[ds] rank 0 of 1 (local 0 of 1)")
            && err.contains("single rank (no MPI launcher in the environment)"),
        "{err}"
    );
    assert!(
        out.contains("288 collective cases passed on 1 rank(s)"),
        "{out}"
    );
}

#[test]
fn a_mismatched_call_fails_on_every_rank_naming_the_ranks_and_their_values() {
    let run = launch(
        3,
        "mismatch",
        &[("DS_VALIDATE_COLLECTIVES", "1")],
        "mismatch",
    );
    assert!(run.elapsed < GUARD_LIMIT, "{}", run.explain());
    assert_eq!(run.code(), Some(1), "{}", run.explain());
    let err = run.stderr();
    for rank in 0..3 {
        let line = format!(
            "rank {rank}: FAILED: collective all_reduce on rank {rank}: ranks disagree about the \
             call: rank(s) 1 differ from rank 0 (rank 0: all_reduce dtype f32 len 100 op sum; \
             rank 1: all_reduce dtype f32 len 99 op sum; rank 2: all_reduce dtype f32 len 100 op \
             sum)"
        );
        assert!(err.contains(&line), "missing {line:?}\n{}", run.explain());
    }
    assert_eq!(leftovers(&run.marker), Vec::<String>::new());
}

#[test]
fn a_rank_that_never_arrives_times_out_and_ends_the_job_naming_it() {
    let run = launch(3, "late", &[("DS_COLLECTIVE_TIMEOUT_SECS", "3")], "late");
    assert!(run.elapsed < GUARD_LIMIT, "{}", run.explain());
    assert!(run.elapsed >= Duration::from_secs(3), "{}", run.explain());
    assert_eq!(
        run.code(),
        Some(ds_comm_mpi::TIMEOUT_EXIT_CODE),
        "{}",
        run.explain()
    );
    let err = run.stderr();
    assert!(
        err.contains("collective barrier on rank 0 timed out after 3.0 s waiting for ranks [1]")
            || err.contains(
                "collective barrier on rank 2 timed out after 3.0 s waiting for ranks [1]"
            ),
        "{}",
        run.explain()
    );
    assert!(
        !run.stdout().contains("the barrier completed"),
        "{}",
        run.explain()
    );
    // Rank 1 was asleep for ten minutes: the abort must have ended it too.
    assert_eq!(leftovers(&run.marker), Vec::<String>::new());
}

#[test]
fn a_dead_rank_ends_every_other_rank_promptly() {
    let run = launch(3, "die", &[], "die");
    assert!(run.elapsed < GUARD_LIMIT, "{}", run.explain());
    assert!(
        run.code().is_some_and(|c| c != 0),
        "mpirun must fail: {}",
        run.explain()
    );
    let err = run.stderr();
    assert!(
        err.contains("rank 1: killing itself with SIGKILL")
            && err.contains("process rank 1")
            && err.contains("signal 9"),
        "{}",
        run.explain()
    );
    assert!(
        !run.stdout().contains("completed although"),
        "{}",
        run.explain()
    );
    assert_eq!(leftovers(&run.marker), Vec::<String>::new());
}

/// The engine example (built with the tests: `cargo test` compiles examples).
fn zero_train() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("zero_train"))
        .expect("target directory");
    assert!(
        example.is_file(),
        "NOT RUN: {} is missing; build it with `cargo build -p ds --features mpi --example zero_train` \
         (scripts/test.sh does)",
        example.display()
    );
    example
}

/// Rank 0's losses and every rank's parameter hash from one run's output.
fn losses_and_hashes(stdout: &str) -> (Vec<f32>, Vec<String>) {
    let mut losses = Vec::new();
    let mut hashes = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ds-loss", "step", _, _, bits] => {
                let bits = u32::from_str_radix(bits, 16).expect("loss bits");
                losses.push(f32::from_bits(bits));
            }
            ["ds-params", "rank", _, hash] => hashes.push(hash.to_string()),
            _ => {}
        }
    }
    (losses, hashes)
}

#[test]
fn zero_on_mpi_ranks_matches_one_rank_on_the_same_global_batch() {
    const STEPS: usize = 8;
    let single = Command::new(zero_train())
        .args(["0", &STEPS.to_string()])
        .output()
        .expect("zero_train starts");
    assert!(single.status.success(), "{single:?}");
    let (reference, _) = losses_and_hashes(&String::from_utf8_lossy(&single.stdout));
    assert_eq!(reference.len(), STEPS);
    let on_mpi = |ranks: usize, stage: u32, offload: &str| {
        let mut cmd = Command::new(mpirun());
        cmd.args(["-np", &ranks.to_string(), "--oversubscribe"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(zero_train())
            .args([stage.to_string(), STEPS.to_string()]);
        if !offload.is_empty() {
            cmd.arg(offload);
        }
        let out = cmd.output().expect("mpirun starts");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    for (ranks, stage) in [(2usize, 2u32), (4, 1), (2, 3), (4, 3)] {
        let text = on_mpi(ranks, stage, "");
        let (losses, hashes) = losses_and_hashes(&text);
        assert_eq!(losses.len(), STEPS, "{text}");
        // The engine issue's tolerance for the same global batch on more ranks.
        for (step, (a, b)) in losses.iter().zip(&reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "ZeRO-{stage} on {ranks} MPI ranks, step {step}: loss {a} vs one rank {b}"
            );
        }
        assert_eq!(hashes.len(), ranks, "{text}");
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "replicas diverged on {ranks} ranks: {hashes:?}"
        );
        // With the optimizer state offloaded to each rank's host backend (and at stage 3 the
        // parameter slices too), or to NVMe swap files: the same bits.
        let offloads: &[&str] = if stage == 3 {
            &["offload", "offload-param", "nvme"]
        } else {
            &["offload", "nvme"]
        };
        for offload in offloads {
            let offloaded = on_mpi(ranks, stage, offload);
            assert_eq!(
                losses_and_hashes(&offloaded),
                (losses.clone(), hashes.clone()),
                "ZeRO-{stage} {offload} on {ranks} MPI ranks"
            );
        }
    }
}
