//! Preopened listening sockets for preview 1 modules, as the wasmtime CLI's
//! `-S tcplisten=ADDR` gives them: the annotation `strata.dev/wasm.tcplisten` names one or more
//! addresses, which the runner binds in the container's network namespace before it gives up
//! its capabilities (so no `socket`, `bind` or `listen` is in its filter). The module finds
//! them at descriptors 3, 4, ... in the order given (as with wasmtime, and as `LISTEN_FDS`,
//! which the runner sets, says), its preopened directories after them.
//!
//! wasmtime-wasi 48's preview 1 has no sockets (its `sock_accept` answers `notsock`), so the
//! calls that reach a socket are shadowed here ([`FUNCS`]): `sock_accept`, `sock_recv`,
//! `sock_send`, `sock_shutdown`, `fd_read`, `fd_write`, `fd_close`, `fd_fdstat_get`,
//! `fd_fdstat_set_flags` (non-blocking), `fd_prestat_get` and `fd_prestat_dir_name`. Each
//! calls wasmtime-wasi's own for any other descriptor.
//!
//! wasmtime-wasi numbers what a module opens after the highest descriptor it holds, so the
//! sockets' numbers are held in its table too: by a read-only second opening of the first
//! preopened directory per listener (no capability the module did not have), and for an
//! accepted connection by opening `.` of that directory again. Where nothing is preopened,
//! the module can open nothing, and the numbers are the runner's own. Those holders are what
//! a call that is not shadowed sees (`fd_filestat_get`, `poll_oneoff`, `fd_renumber`):
//! blocking and `O_NONBLOCK` calls work on the sockets, polling them does not.
//! `fd_prestat_get` answers a preopen of a kind that is not a directory (tag 1), which
//! wasi-libc's and Go's preopen scans skip, so the directories after the sockets are found.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use wasmtime::{Caller, Extern, Linker, Val};

use crate::runner::P1State;
use crate::shadow::{Originals, User, MODULE};

/// The annotation naming the addresses to listen on, comma-separated (`0.0.0.0:8080`,
/// `[::]:8080,127.0.0.1:9090`): the pod's (every container of it) or `ctr`'s.
pub const ANNOTATION: &str = "strata.dev/wasm.tcplisten";
/// The environment variable naming them for one container (a Kubernetes pod spec sets
/// annotations for the whole pod); it wins over the annotation.
pub const ENV: &str = "STRATA_WASM_TCPLISTEN";

/// The shadowed functions and the one called besides (`path_open`, which holds numbers).
const FUNCS: &[(&str, &str)] = &[
    ("sock_accept", "iii"),
    ("sock_recv", "iiiiii"),
    ("sock_send", "iiiii"),
    ("sock_shutdown", "ii"),
    ("fd_read", "iiii"),
    ("fd_write", "iiii"),
    ("fd_close", "i"),
    ("fd_fdstat_get", "ii"),
    ("fd_fdstat_set_flags", "ii"),
    ("fd_prestat_get", "ii"),
    ("fd_prestat_dir_name", "iii"),
    ("path_open", "iiiiiIIii"),
];

// WASI preview 1's errnos.
const SUCCESS: i32 = 0;
const AGAIN: i32 = 6;
const BADF: i32 = 8;
const CONNRESET: i32 = 15;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const IO: i32 = 29;
const NOTCONN: i32 = 53;
const NOTDIR: i32 = 54;
const PIPE: i32 = 64;

/// `fdflags.nonblock`.
const NONBLOCK: i32 = 4;
/// `filetype.socket_stream`.
const SOCKET_STREAM: u8 = 6;
/// The rights a socket has: `fd_read`, `fd_fdstat_set_flags`, `fd_write`, `fd_filestat_get`,
/// `poll_fd_readwrite`, `sock_shutdown`, `sock_accept`.
const SOCKET_RIGHTS: u64 = 1 << 1 | 1 << 3 | 1 << 6 | 1 << 21 | 1 << 27 | 1 << 28 | 1 << 29;

/// The addresses of a comma-separated list; the error names the one that is wrong.
pub fn parse(value: &str) -> Result<Vec<SocketAddr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| format!("{a:?} is not an address and port (0.0.0.0:8080, [::]:8080)"))
        })
        .collect()
}

/// Binds the listeners, in the container's network namespace.
pub fn bind(addresses: &[String]) -> Result<Vec<TcpListener>, String> {
    addresses
        .iter()
        .map(|a| {
            TcpListener::bind(a.as_str())
                .map_err(|e| format!("listen on {a} ({ENV} or {ANNOTATION}): {e}"))
        })
        .collect()
}

enum Kind {
    Listener(TcpListener),
    Stream(TcpStream),
}

struct Socket {
    kind: Kind,
    /// Whether wasmtime-wasi's table holds the number (closed there too when it closes).
    held: bool,
    nonblocking: bool,
}

/// The task's sockets by the module's descriptor numbers (in its store).
#[derive(Default)]
pub struct Sockets {
    open: HashMap<i32, Socket>,
    /// The directory whose `.` holds an accepted connection's number in wasmtime-wasi's
    /// table; none where nothing is preopened (the numbers are then ours alone).
    holder: Option<i32>,
}

impl Sockets {
    /// `listeners` at 3, 4, ...; `dirs`: whether directories are preopened after them (and
    /// the listeners' numbers are held in wasmtime-wasi's table, [`holders`]).
    pub fn new(listeners: Vec<TcpListener>, dirs: bool) -> Sockets {
        let holder = dirs.then_some(3 + listeners.len() as i32);
        let open = (3..)
            .zip(listeners)
            .map(|(fd, l)| {
                (
                    fd,
                    Socket {
                        kind: Kind::Listener(l),
                        held: dirs,
                        nonblocking: false,
                    },
                )
            })
            .collect();
        Sockets { open, holder }
    }
}

/// How many preopens hold the listeners' numbers in wasmtime-wasi's table: one per listener
/// where directories are preopened, none where nothing is.
pub fn holders(listeners: usize, dirs: usize) -> usize {
    if dirs == 0 {
        0
    } else {
        listeners
    }
}

/// Shadows [`FUNCS`] in `linker` (which holds wasmtime-wasi's preview 1) for a task with
/// listening sockets.
pub fn shadow(linker: &mut Linker<P1State>) -> wasmtime::Result<()> {
    let originals = Originals::take(linker, User::Listen, FUNCS)?;
    for &(name, _) in FUNCS.iter().filter(|(n, _)| *n != "path_open") {
        let originals = originals.clone();
        linker.func_new(
            MODULE,
            name,
            originals.func_type(name),
            move |mut caller: Caller<'_, P1State>, args: &[Val], results: &mut [Val]| {
                let fd = args[0].i32().unwrap_or(-1);
                let errno = if caller.data().sockets.open.contains_key(&fd) {
                    on_socket(&mut caller, &originals, name, fd, args)?
                } else {
                    originals.call(&mut caller, name, args)?
                };
                results[0] = Val::I32(errno);
                Ok(())
            },
        )?;
    }
    Ok(())
}

fn arg(args: &[Val], i: usize) -> u32 {
    args[i].i32().unwrap_or_default() as u32
}

/// The module's memory.
fn memory<'a>(caller: &'a mut Caller<'_, P1State>) -> Option<(&'a mut [u8], &'a mut P1State)> {
    let Some(Extern::Memory(m)) = caller.get_export("memory") else {
        return None;
    };
    Some(m.data_and_store_mut(caller))
}

fn range(mem: &[u8], at: u32, len: u32) -> Option<std::ops::Range<usize>> {
    let start = at as usize;
    let end = start.checked_add(len as usize)?;
    (end <= mem.len()).then_some(start..end)
}

/// Stores `bytes` at `at` in the module's memory; false where that is out of bounds.
fn store(caller: &mut Caller<'_, P1State>, at: u32, bytes: &[u8]) -> bool {
    memory(caller).is_some_and(|(mem, _)| put(mem, at, bytes))
}

fn put(mem: &mut [u8], at: u32, bytes: &[u8]) -> bool {
    match range(mem, at, bytes.len() as u32) {
        Some(r) => {
            mem[r].copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

fn get_u32(mem: &[u8], at: u32) -> Option<u32> {
    let r = range(mem, at, 4)?;
    Some(u32::from_le_bytes(mem[r].try_into().ok()?))
}

/// The (address, length) pairs of an iovec array in the module's memory.
fn iovecs(mem: &[u8], at: u32, count: u32) -> Option<Vec<(u32, u32)>> {
    (0..count)
        .map(|i| {
            let base = at.checked_add(i.checked_mul(8)?)?;
            Some((get_u32(mem, base)?, get_u32(mem, base.checked_add(4)?)?))
        })
        .collect()
}

fn errno_of(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind::*;
    match e.kind() {
        WouldBlock => AGAIN,
        ConnectionReset | ConnectionAborted => CONNRESET,
        BrokenPipe => PIPE,
        NotConnected => NOTCONN,
        InvalidInput => INVAL,
        _ => IO,
    }
}

/// `name` on the socket at `fd`.
fn on_socket(
    caller: &mut Caller<'_, P1State>,
    originals: &Originals,
    name: &str,
    fd: i32,
    args: &[Val],
) -> wasmtime::Result<i32> {
    Ok(match name {
        "sock_accept" => accept(caller, originals, fd, arg(args, 1) as i32, arg(args, 2))?,
        "fd_read" => transfer(caller, fd, args, Some(Recv::Plain)),
        "sock_recv" => {
            // riflags: recv_peek 1, recv_waitall 2.
            let how = match arg(args, 3) {
                f if f & 1 != 0 => Recv::Peek,
                f if f & 2 != 0 => Recv::WaitAll,
                _ => Recv::Plain,
            };
            transfer(caller, fd, args, Some(how))
        }
        "fd_write" | "sock_send" => transfer(caller, fd, args, None),
        "sock_shutdown" => {
            let how = match arg(args, 1) {
                1 => Shutdown::Read,
                2 => Shutdown::Write,
                3 => Shutdown::Both,
                _ => return Ok(INVAL),
            };
            match &caller.data().sockets.open[&fd].kind {
                Kind::Stream(s) => s.shutdown(how).map_or_else(|e| errno_of(&e), |()| SUCCESS),
                Kind::Listener(_) => NOTCONN,
            }
        }
        "fd_close" => {
            let Some(s) = caller.data_mut().sockets.open.remove(&fd) else {
                return Ok(BADF);
            };
            drop(s.kind);
            if s.held {
                originals.call(caller, "fd_close", args)?
            } else {
                SUCCESS
            }
        }
        "fd_fdstat_get" => {
            let nonblocking = caller.data().sockets.open[&fd].nonblocking;
            let mut stat = [0u8; 24];
            stat[0] = SOCKET_STREAM;
            let flags: u16 = if nonblocking { NONBLOCK as u16 } else { 0 };
            stat[2..4].copy_from_slice(&flags.to_le_bytes());
            stat[8..16].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
            stat[16..24].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
            if store(caller, arg(args, 1), &stat) {
                SUCCESS
            } else {
                FAULT
            }
        }
        "fd_fdstat_set_flags" => {
            let on = arg(args, 1) as i32 & NONBLOCK != 0;
            let s = caller
                .data_mut()
                .sockets
                .open
                .get_mut(&fd)
                .expect("checked");
            let res = match &s.kind {
                Kind::Listener(l) => l.set_nonblocking(on),
                Kind::Stream(t) => t.set_nonblocking(on),
            };
            match res {
                Ok(()) => {
                    s.nonblocking = on;
                    SUCCESS
                }
                Err(e) => errno_of(&e),
            }
        }
        "fd_prestat_get" => {
            // A preopen, but not a directory (tag 1): preopen scans go on past it.
            let mut prestat = [0u8; 8];
            prestat[0] = 1;
            if store(caller, arg(args, 1), &prestat) {
                SUCCESS
            } else {
                FAULT
            }
        }
        "fd_prestat_dir_name" => NOTDIR,
        _ => BADF,
    })
}

/// `sock_accept(fd, flags, result)`: a connection, numbered as wasmtime-wasi numbers what is
/// opened.
fn accept(
    caller: &mut Caller<'_, P1State>,
    originals: &Originals,
    fd: i32,
    flags: i32,
    result: u32,
) -> wasmtime::Result<i32> {
    let accepted = match &caller.data().sockets.open[&fd].kind {
        Kind::Listener(l) => l.accept(),
        Kind::Stream(_) => return Ok(INVAL),
    };
    let stream = match accepted {
        Ok((s, _)) => s,
        Err(e) => return Ok(errno_of(&e)),
    };
    let nonblocking = flags & NONBLOCK != 0;
    if let Err(e) = stream.set_nonblocking(nonblocking) {
        return Ok(errno_of(&e));
    }
    let (number, held) = match caller.data().sockets.holder {
        Some(dir) => {
            // `.` of the directory, opened read-only (o_directory, no rights), at `result`,
            // which also holds the one-byte path until wasmtime-wasi has read it.
            if !store(caller, result, b".\0\0\0") {
                return Ok(FAULT);
            }
            let args = [
                Val::I32(dir),
                Val::I32(0),
                Val::I32(result as i32),
                Val::I32(1),
                Val::I32(2),
                Val::I64(0),
                Val::I64(0),
                Val::I32(0),
                Val::I32(result as i32),
            ];
            let errno = originals.call(caller, "path_open", &args)?;
            if errno != SUCCESS {
                return Ok(errno);
            }
            let Some((mem, _)) = memory(caller) else {
                return Ok(FAULT);
            };
            match get_u32(mem, result) {
                Some(n) => (n as i32, true),
                None => return Ok(FAULT),
            }
        }
        None => {
            let open = &caller.data().sockets.open;
            let n = (3..).find(|n| !open.contains_key(n)).unwrap_or(i32::MAX);
            if !store(caller, result, &(n as u32).to_le_bytes()) {
                return Ok(FAULT);
            }
            (n, false)
        }
    };
    caller.data_mut().sockets.open.insert(
        number,
        Socket {
            kind: Kind::Stream(stream),
            held,
            nonblocking,
        },
    );
    Ok(SUCCESS)
}

/// How `sock_recv` reads (its `riflags`); `fd_read` reads plainly.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recv {
    Plain,
    /// `recv_peek`: the data stays queued.
    Peek,
    /// `recv_waitall`: until the buffers are full or the peer is done.
    WaitAll,
}

/// `fd_read`/`sock_recv` (`recv` given) or `fd_write`/`sock_send` (`recv` none): one read or
/// write of the socket at `fd` through the iovecs at `args[1]` (count `args[2]`); the byte
/// count is stored at `args[4]` for `sock_recv` and `sock_send` (and `sock_recv`'s `roflags`,
/// none, at `args[5]`), at `args[3]` for `fd_read` and `fd_write`.
fn transfer(caller: &mut Caller<'_, P1State>, fd: i32, args: &[Val], recv: Option<Recv>) -> i32 {
    let count_at = arg(args, if args.len() >= 5 { 4 } else { 3 });
    let Some((mem, state)) = memory(caller) else {
        return FAULT;
    };
    let Some(vecs) = iovecs(mem, arg(args, 1), arg(args, 2)) else {
        return FAULT;
    };
    let mut stream = match &state.sockets.open[&fd].kind {
        Kind::Stream(s) => s,
        Kind::Listener(_) => return NOTCONN,
    };
    let total: usize = vecs.iter().map(|&(_, l)| l as usize).sum();
    let mut buf = vec![0u8; total.min(1 << 20)];
    let done = match recv {
        None => {
            let mut filled = 0;
            for &(at, len) in &vecs {
                let Some(r) = range(mem, at, len) else {
                    return FAULT;
                };
                let n = r.len().min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&mem[r.start..r.start + n]);
                filled += n;
            }
            stream.write(&buf[..filled])
        }
        Some(Recv::Peek) => stream.peek(&mut buf),
        Some(Recv::Plain) => stream.read(&mut buf),
        Some(Recv::WaitAll) => {
            let mut filled = 0;
            loop {
                match stream.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(filled),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Ok(filled);
                        }
                    }
                    Err(e) if filled > 0 && e.kind() == std::io::ErrorKind::WouldBlock => {
                        break Ok(filled)
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    let done = match done {
        Ok(n) => n,
        Err(e) => return errno_of(&e),
    };
    if recv.is_some() {
        let mut left = &buf[..done];
        for &(at, len) in &vecs {
            let n = (len as usize).min(left.len());
            if !put(mem, at, &left[..n]) {
                return FAULT;
            }
            left = &left[n..];
        }
    }
    if !put(mem, count_at, &(done as u32).to_le_bytes()) {
        return FAULT;
    }
    if args.len() == 6 && !put(mem, arg(args, 5), &[0, 0]) {
        return FAULT;
    }
    SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_and_a_bad_one_is_named() {
        assert_eq!(
            parse("0.0.0.0:8080, [::1]:9090").unwrap(),
            vec![
                "0.0.0.0:8080".parse::<SocketAddr>().unwrap(),
                "[::1]:9090".parse().unwrap()
            ]
        );
        let err = parse("0.0.0.0:8080,localhost:http").unwrap_err();
        assert!(err.contains("\"localhost:http\""), "{err}");
    }

    #[test]
    fn listeners_are_held_in_the_table_only_where_directories_are_preopened() {
        assert_eq!(holders(2, 0), 0);
        assert_eq!(holders(2, 3), 2);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = Sockets::new(vec![l], true);
        assert_eq!(s.holder, Some(4));
        assert!(s.open[&3].held);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = Sockets::new(vec![l], false);
        assert_eq!(s.holder, None);
        assert!(!s.open[&3].held);
    }
}
