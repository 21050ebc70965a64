//! `execve` and `execveat`: judged here, performed by the kernel (CONTINUE) only when no other
//! task can rewrite the path between the check and the kernel's own read.

use super::*;

/// Whether no other task can rewrite the task's memory between the check and the kernel's
/// own read of the exec path: one thread, memory not shared with a multi-threaded parent
/// (vfork), and the path not in a shared mapping.
pub(super) fn private_memory(t: &Task, addr: u64) -> bool {
    if t.threads != 1 {
        return false;
    }
    if sys::same_vm(t.pid, t.ppid).unwrap_or(true) {
        let parent_threads = std::fs::read_to_string(format!("/proc/{}/status", t.ppid))
            .ok()
            .and_then(|s| field(&s, "Threads").and_then(|v| v.parse::<u32>().ok()));
        if parent_threads != Some(1) {
            return false;
        }
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)) else {
        return false;
    };
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return perms.as_bytes().get(3) == Some(&b'p');
        }
    }
    false
}

pub(super) fn exec_call(call: &mut Call<'_>, dirfd: i32, ptr: u64, flags: i32) -> Outcome {
    let pid = call.n.pid;
    let path = if flags & libc::AT_EMPTY_PATH != 0 && ptr != 0 {
        read_cstr(pid, ptr).unwrap_or_default()
    } else {
        match read_cstr(pid, ptr) {
            Ok(p) => p,
            Err(e) => return Outcome::Errno(e, "unreadable path"),
        }
    };
    call.arg("path", path.clone());
    if !call.valid() {
        return Outcome::Gone;
    }
    let Ok((t, root)) = task_and_root(call.ctx, pid, Need::All) else {
        return call.unreadable();
    };
    let real = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        match readlink(&format!("/proc/{pid}/fd/{dirfd}")) {
            Ok(p) if p.starts_with('/') => normalize(&p),
            _ => return Outcome::Errno(libc::EACCES, "exec of a descriptor that is no file"),
        }
    } else {
        let abs = match absolute(&t, dirfd, &path) {
            Ok(p) => p,
            Err(e) => return Outcome::Errno(e, "cannot place a relative path"),
        };
        let _creds = match sys::AsWorkload::enter(&t.creds) {
            Ok(g) => g,
            Err(_) => {
                return Outcome::Errno(libc::EACCES, "cannot take the workload's credentials")
            }
        };
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
        match resolve(&t, &root, &abs, follow) {
            Ok(Resolved::At {
                dir, name, real, ..
            }) => {
                let cname = match names::to_c(&name) {
                    Ok(c) => c,
                    Err(e) => return Outcome::Errno(e, "resolution failed"),
                };
                match nix::sys::stat::fstatat(
                    Some(dir.as_raw_fd()),
                    cname.as_c_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFREG =>
                    {
                        real
                    }
                    Ok(_) => return Outcome::Errno(libc::EACCES, "not a regular file"),
                    Err(e) => return Outcome::Errno(e as i32, "no such file"),
                }
            }
            Ok(Resolved::OwnFd { .. }) => {
                return Outcome::Errno(libc::EACCES, "exec through /proc/self/fd")
            }
            Err(e) => return Outcome::Errno(e, "resolution failed"),
        }
    };
    if real != normalize(&path) || call.ctx.policy().record {
        call.arg("resolved", real.clone());
    }
    if !call.ctx.policy().exec_allowed(&real) {
        return Outcome::Errno(libc::EACCES, "not in the exec allowlist");
    }
    let private = private_memory(&t, ptr);
    if !private {
        call.arg("shared_memory", "true");
        if call.ctx.policy().require_private_memory {
            return Outcome::Errno(libc::EPERM, "exec path in memory another task can write");
        }
    }
    // The kernel reads the path again after CONTINUE: it must still say the same.
    if read_cstr(pid, ptr).unwrap_or_default() != path || !call.valid() {
        return Outcome::Errno(libc::EAGAIN, "exec path changed during the check");
    }
    Outcome::Continue
}
