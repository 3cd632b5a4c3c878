//! Guards for threads that an actor system waits on: the system stops however the thread ends.

/// Stops an actor system when dropped.
pub(crate) struct StopOnDrop(pub(crate) actix::System);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `f()`, or an error naming `what` and the panic's message when it panics.
pub(crate) fn caught<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, crate::error::RuntimeError>,
) -> Result<T, crate::error::RuntimeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(crate::error::ActorError::Panicked {
            thread: what.to_string(),
            text: Some(panic_text(p.as_ref())),
        }
        .into())
    })
}

/// The message of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn a_system_stops_when_its_guarded_thread_panics() {
        let (done, ended) = channel();
        std::thread::spawn(move || {
            let sys = actix::System::new();
            let stop = sys.block_on(async { StopOnDrop(actix::System::current()) });
            let guarded = std::thread::spawn(move || {
                let _stop = stop;
                panic!("the control loop failed");
            });
            let ran = sys.run();
            let text = guarded.join().map_err(|p| panic_text(p.as_ref()));
            let _ = done.send((ran.is_ok(), text));
        });
        let (ran, text) = ended
            .recv_timeout(Duration::from_secs(20))
            .expect("the actor system kept running after its guarded thread panicked");
        assert!(ran);
        assert_eq!(text, Err("the control loop failed".to_string()));
    }
}
