//! The handshake against a peer that says anything: the fuzz input is everything the peer
//! sends, in either role. It must end (the peer's bytes run out), never panic, never admit a
//! peer without a valid proof (the input cannot contain one: the token is secret to it), and
//! `Hello::decode` must never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_transport::handshake::{handshake, HandshakeStream, Hello, Identity, Role};
use std::io::{Read, Write};
use std::time::Duration;

/// A peer whose bytes are the fuzz input; what this side writes is dropped.
struct Scripted<'a> {
    input: &'a [u8],
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HandshakeStream for Scripted<'_> {
    fn set_io_timeout(&self, _t: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }
    fn remote(&self) -> String {
        "fuzz".into()
    }
    fn close(&self) {}
}

fuzz_target!(|data: &[u8]| {
    let _ = Hello::decode(data);
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 {
        Role::Initiator
    } else {
        Role::Acceptor
    };
    let expect = ["n0".to_string(), "n1".to_string()];
    let expect = (mode & 2 != 0).then_some(&expect[..]);
    let me = Identity::new("c", "n1", b"a token the input cannot know");
    let mut peer = Scripted { input };
    let r = handshake(&mut peer, role, &me, expect, Duration::from_secs(3600));
    assert!(r.is_err(), "admitted a peer without the token: {r:?}");
});
