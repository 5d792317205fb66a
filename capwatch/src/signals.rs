//! The signals that stop a foreground command: SIGINT (Ctrl-C) and SIGTERM.

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled: a signal sent as soon as the command says it has started must not kill it.
pub fn shutdown() -> impl std::future::Future<Output = std::io::Result<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let (mut term, mut int) = handlers?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
}
