//! Files of a run written on a thread of their own while training goes on: checkpoints and the
//! best model.
//!
//! A checkpoint of MiniLM is about 270 MB (model and AdamW moments); written from the training
//! loop it took 2.2-2.6 s per epoch of a UCI run on 2 cores (11% of the run, one core busy at
//! most). Here the loop hands over a snapshot (clones of the tensors, whose storage is shared
//! and copied on the next write to it) and goes on; jobs run in order, one at a time. The end
//! of the run waits for them and reports the first error; a run that fails otherwise still
//! waits for them when dropped. Each job writes into a partial folder renamed into place, so a
//! stop at any moment leaves the last complete checkpoint.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use crate::error::{Result, TrainError};

type Job = Box<dyn FnOnce() -> Result<()> + Send>;

/// Jobs waiting beyond the one running.
const QUEUED: usize = 1;

/// The writing thread, started on the first job.
#[derive(Default)]
pub(super) struct Writer {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Writer {
    /// Queues `job` (waiting while [`QUEUED`] jobs already wait); the error of an earlier job
    /// if one failed.
    pub(super) fn submit(
        &mut self,
        job: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Result<()> {
        if self.jobs.is_none() {
            let (sender, receiver) = sync_channel::<Job>(QUEUED);
            let thread = std::thread::Builder::new()
                .name("mtl-writer".into())
                .spawn(move || receiver.into_iter().try_for_each(|job| job()))
                .map_err(|source| TrainError::Io {
                    path: "(a thread to write checkpoints)".into(),
                    source,
                })?;
            (self.jobs, self.thread) = (Some(sender), Some(thread));
        }
        let sender = self.jobs.as_ref().expect("started above");
        if sender.send(Box::new(job)).is_err() {
            // The thread stopped at a failed job: its error.
            self.wait()?;
        }
        Ok(())
    }

    /// Waits for every queued job; the first error.
    pub(super) fn wait(&mut self) -> Result<()> {
        self.jobs = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // An error here comes second to the one the run is already returning.
        let _ = self.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn jobs_run_in_order_and_the_first_error_is_reported() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut writer = Writer::default();
        for i in 0..5 {
            let log = log.clone();
            writer
                .submit(move || {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    log.lock().unwrap().push(i);
                    Ok(())
                })
                .unwrap();
        }
        writer.wait().unwrap();
        assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3, 4]);

        let fail = || Err(TrainError::Data("disk full".into()));
        writer.submit(fail).unwrap();
        let mut later = Ok(());
        for _ in 0..3 {
            later = later.and(writer.submit(|| Ok(())));
        }
        let error = later.and(writer.wait()).unwrap_err();
        assert!(error.to_string().contains("disk full"), "{error}");
        // The writer starts again afterwards.
        writer.submit(|| Ok(())).unwrap();
        writer.wait().unwrap();
    }
}
