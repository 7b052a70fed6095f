//! The bound on anonymous sign-in work: argon2id takes about 19 MiB and a
//! core for a moment per password, so only a few verifications run at once, a
//! few more sign-ins wait their turn, and a sign-in beyond those is refused at
//! once (429) instead of queueing memory without end. A sign-in is admitted
//! before it even looks its address up in the store, so the store sees no
//! more anonymous lookups at once than there are places either.
//!
//! Verifications run on a few threads of their own, each with one argon2
//! working buffer it keeps ([`with_memory`]): argon2's own buffer, allocated
//! per verification, was kept by the allocator after each one (about 400 MB
//! after 20 sign-ins), while a fixed set of threads with a buffer each holds
//! `running` × 19 MiB at most.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

thread_local! {
    /// This verification thread's argon2 working memory.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with the calling verification thread's argon2 working memory.
pub fn with_memory<T>(f: impl FnOnce(&mut Vec<argon2::Block>) -> T) -> T {
    MEMORY.with(|memory| f(&mut memory.borrow_mut()))
}

/// A verification waiting for a thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs password verifications on `running` threads of its own, with at
/// most `waiting` more sign-ins admitted and waiting for one.
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
    /// One permit per sign-in that may be admitted (running or waiting):
    /// taken without waiting, so that the queue itself is bounded.
    admitted: Arc<Semaphore>,
    /// Running plus waiting, at most.
    #[cfg(test)]
    capacity: usize,
}

/// Too many sign-ins are running and waiting already.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// A sign-in's place among those admitted: it may look up the address, then
/// verify the password when a thread is free.
pub struct Admitted {
    place: OwnedSemaphorePermit,
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    pub fn new(running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..running {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("herald-verify-{n}"))
                .spawn(move || {
                    // Ends when the verifier, and every admitted sign-in, is gone.
                    loop {
                        let job = queue.lock().expect("verifier queue lock").recv();
                        match job {
                            // A panicking job loses its answer (the sign-in is
                            // refused), not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("starting a password verification thread");
        }
        Verifier {
            jobs,
            admitted: Arc::new(Semaphore::new(running + waiting)),
            #[cfg(test)]
            capacity: running + waiting,
        }
    }

    /// A place for one more sign-in, or [`Busy`] at once when every place
    /// is taken: nobody waits for a place.
    pub fn admit(&self) -> Result<Admitted, Busy> {
        let place = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        Ok(Admitted {
            place,
            jobs: self.jobs.clone(),
        })
    }

    /// Admits and runs `work` at once; for tests.
    #[cfg(test)]
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        self.admit()?.verify(work).await
    }

    /// Sign-ins admitted (running or waiting) now.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admitted.available_permits()
    }
}

impl Admitted {
    /// Runs `work` (a blocking function) when a verification thread is free.
    ///
    /// The place moves into the job, so a verification whose request was
    /// abandoned still counts until it has really finished.
    pub async fn verify<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (done, result) = oneshot::channel();
        let place = self.place;
        let job: Job = Box::new(move || {
            let result = work();
            // The place is free before the answer is: whoever hears the
            // answer finds the place given back.
            drop(place);
            let _ = done.send(result);
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        // A verification that panicked counts as refused work, not a match.
        result.await.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Never more than `running` at once, the queue bounded, and the next
    /// refused at once: checked by counting, not by timing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_are_bounded_and_the_queue_too() {
        let verifier = Arc::new(Verifier::new(2, 3));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (verifier, now, most, gate) =
                (verifier.clone(), now.clone(), most.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                verifier
                    .run(move || {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(running, Ordering::SeqCst);
                        gate.lock().unwrap().recv().unwrap();
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while verifier.in_flight() < 5 || now.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "five admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two run, three wait: the sixth is refused without waiting.
        assert_eq!(now.load(Ordering::SeqCst), 2);
        assert_eq!(verifier.run(|| ()).await, Err(Busy));
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(verifier.in_flight(), 0);
        assert_eq!(verifier.run(|| 7).await, Ok(7));
    }
}
