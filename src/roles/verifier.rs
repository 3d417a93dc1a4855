//! Verifier pool: verification of approval signatures (ed25519 `verify_strict`, ML-DSA-65, or
//! both halves of a hybrid: `PublicKey::verify`) on several threads.
//!
//! Threads: `verifiers` threads named `verify-{i}`. Input: one bounded job channel shared by all
//! (MPMC), fed only by the writer. Output: each job's result goes to the writer's internal
//! channel. State: none. Shutdown: when the writer drops the job sender, each thread drains and
//! exits.
//!
//! The writer verifies inline only a one-signature `/submit` or `/approve` that finds it and the
//! pool idle (a lone client's latency); a burst of approvals or submits uses every core while
//! the writer keeps sequencing commits.

use crate::domain::signers::{PublicKey, Sig};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub struct VerifyJob {
    pub key: PublicKey,
    pub sig: Sig,
    pub pae: Arc<[u8]>,
    /// Which request and which signature within it, for the writer's bookkeeping.
    pub request: u64,
    pub index: usize,
}

pub struct Verified {
    pub request: u64,
    pub index: usize,
    pub ok: bool,
}

/// Verify one job, timed into `approval_verify_seconds` (the pool's threads, and the writer
/// when it verifies a lone submit itself).
pub fn verify(job: &VerifyJob) -> Verified {
    let started = Instant::now();
    let ok = job.key.verify(&job.sig, &job.pae);
    // Labelled by the key's algorithm: an ML-DSA-65 verify costs several ed25519 ones, and
    // the runbook's CPU provisioning needs each apart.
    crate::metrics::m()
        .approval_verify_seconds
        .with_label_values(&[job.key.alg().as_str()])
        .observe(started.elapsed().as_secs_f64());
    Verified {
        request: job.request,
        index: job.index,
        ok,
    }
}

/// Start `threads` verifiers. `done` receives one [`Verified`] per job, wrapped by `wrap`.
pub fn start<T: Send + 'static>(
    threads: usize,
    jobs: Receiver<VerifyJob>,
    done: Sender<T>,
    wrap: fn(Verified) -> T,
) -> Vec<JoinHandle<()>> {
    (0..threads.max(1))
        .map(|i| {
            let jobs = jobs.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || {
                    // Plain `recv` (its spin-then-yield) on purpose, unlike the threads fed once
                    // per batch: jobs come one per signature, and under load the spin often
                    // catches the next one; parking at once made the writer pay a futex wake
                    // per job (docs/PERFORMANCE.md, issue 20, syscalls per write).
                    for job in jobs.iter() {
                        if done.send(wrap(verify(&job))).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a verifier thread")
        })
        .collect()
}
