//! `uname`: emulated (release, version, the container's names), written into the task.

use super::*;

pub(super) fn uname_call(call: &mut Call<'_>) -> Outcome {
    let field = |s: &str| {
        let mut b = [0u8; 65];
        let n = s.len().min(64);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        b
    };
    let mut buf = Vec::with_capacity(6 * 65);
    for s in [
        "Linux",
        &call.ctx.uts.nodename,
        EMULATED_RELEASE,
        EMULATED_VERSION,
        std::env::consts::ARCH,
        &call.ctx.uts.domainname,
    ] {
        buf.extend_from_slice(&field(s));
    }
    let pid = nix::unistd::Pid::from_raw(call.n.pid as i32);
    let local = [io::IoSlice::new(&buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: call.n.data.args[0] as usize,
        len: buf.len(),
    }];
    if !call.valid() {
        return Outcome::Gone;
    }
    match nix::sys::uio::process_vm_writev(pid, &local, &remote) {
        Ok(n) if n == buf.len() => Outcome::Value(0),
        _ => Outcome::Errno(libc::EFAULT, "bad utsname buffer"),
    }
}
