//! One workload for every tier: a [`Workload`] says what the container's process does (print,
//! exit, read stdin, sleep until killed, allocate...), and renders either as a busybox shell
//! command (native, sentry, microvm, runc) or, on the wasm tier, as the argv of the WASI
//! "contest" module, which takes its behaviour from its arguments (as youki's contest and
//! runwasi's WasiTest do). So a shared-suite test keeps one body and, on wasm, really runs a
//! WebAssembly module instead of busybox (which the wasm tier would hand to the native one).
//!
//! The contest module is written in WAT ([`CONTEST_WAT`]) and reaches a container two ways: in
//! an image (busybox plus `/contest.wasm`, imported once per harness) for `ctr run IMAGE`, or
//! written into the container's own rootfs for a spec ([`WorkloadRun::workload_spec`]).
//!
//! Its script: arguments after argv[0] are steps, each a word and its operands, run in order:
//!
//! | step | does |
//! |---|---|
//! | `out TEXT` / `err TEXT` | writes TEXT to stdout / stderr |
//! | `exit N` | `proc_exit(N)` (WASI takes 0..=125) |
//! | `cat` | copies stdin to stdout until end of file |
//! | `count-stdin` | reads stdin to its end, prints the byte count and a newline |
//! | `fill N C` | writes N bytes of the character C to stdout |
//! | `count MS` | prints 1, 2, 3... one a line, every MS milliseconds, forever |
//! | `busy N` | a loop of N iterations (CPU time) |
//! | `alloc BYTES` | grows linear memory by BYTES and touches every page; a refused `memory.grow` prints how far it got and exits 12 |
//! | `sleep` | sleeps (100 ms `poll_oneoff` at a time) until killed |
//! | `spin` | a tight loop until killed |
//! | `args` / `env` | writes argv / environ, each entry followed by NUL |
//!
//! Returning from the script exits 0. A bad script (unknown step, missing or bad operand)
//! says so on stderr and exits 2.
//!
//! Applet mode, for critest's commands ([`contest_shell_image_builder`]): when argv[0] does
//! not end in `.wasm`, its base name is the command, as for busybox. `echo [-n] WORDS`,
//! `true`, `:`, `false`, `sleep SECONDS` (fractions too), `top` (sleeps until killed),
//! `touch FILES`, `test` / `[` with `-e`, `-f` or `-d PATH`, `cat [FILES]`, `exit [N]`; any
//! other name says `sh: NAME: not found` and exits 127. `sh -c SCRIPT` runs a small shell:
//! words with '...' and "..." quoting and `\` escapes (no expansion of any kind), commands
//! separated by `;` or newlines, `&&`, `||`, `while LIST; do LIST; done`, `#` comments; a
//! pipe or `&` is refused (exit 2). `sh` alone runs stdin line by line, as busybox sh does
//! without a terminal (critest's attach spec). Paths are taken from the rootfs preopen (fd 3):
//! critest's containers run in /. A status above 125 exits 125 (WASI's `proc_exit` range).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::cmd::{self, Background};
use crate::harness::Container;
use crate::image::ImageBuilder;
use crate::{Harness, Output, Runtime, Tier};

/// Where the contest module lives in its image and in a workload spec's rootfs.
pub const CONTEST_PATH: &str = "/contest.wasm";

/// The highest exit status a WASI module can give (`proc_exit` takes 0..=125).
pub const WASI_MAX_EXIT: i32 = 125;

/// WASI preview 1 imports, a memory, and `$write(fd, ptr, len)` (one iovec at 0..8, result
/// count at 8): the prelude of the small hand-written modules of `tests/tests/wasm.rs`.
pub const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
"#;

/// A module: [`PRELUDE`] plus `body` (functions and data).
pub fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {PRELUDE} {body})")).expect("valid WAT")
}

/// A preview 1 echo server on the listening socket preopened at descriptor 3
/// (`strata.dev/wasm.tcplisten`): it checks that descriptor 3 is a stream socket
/// (`fd_fdstat_get`) and a preopen that is not a directory (`fd_prestat_get`, tag 1), then
/// answers `connections` connections, each with `echo: ` and what it read. The first uses
/// `sock_recv`/`sock_send`, the others `fd_read`/`fd_write`. While the first is open it
/// opens `.` of descriptor 4 (the container's root, after the socket): that descriptor must
/// not be the connection's number. Exit codes: 0 done; 10-14 a check failed; 100 + errno,
/// 200 + errno, 300 + errno an accept, read or write failed.
pub fn echo_server(connections: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "echo: ")
  (data (i32.const 310) ".")
  (func (export "_start") (local $c i32) (local $i i32) (local $e i32)
    (if (call $fdstat (i32.const 3) (i32.const 400)) (then (call $exit (i32.const 10))))
    (if (i32.ne (i32.load8_u (i32.const 400)) (i32.const 6)) (then (call $exit (i32.const 11))))
    (if (call $prestat (i32.const 3) (i32.const 440)) (then (call $exit (i32.const 12))))
    (if (i32.ne (i32.load8_u (i32.const 440)) (i32.const 1)) (then (call $exit (i32.const 12))))
    (loop $conns
      (local.set $e (call $accept (i32.const 3) (i32.const 0) (i32.const 100)))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
      (local.set $c (i32.load (i32.const 100)))
      (if (i32.eqz (local.get $i)) (then
        (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 310) (i32.const 1)
              (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 104)))
          (then
            (if (i32.eq (i32.load (i32.const 104)) (local.get $c)) (then (call $exit (i32.const 14))))
            (drop (call $close (i32.load (i32.const 104))))))))
      (i32.store (i32.const 16) (i32.const 1024))
      (i32.store (i32.const 20) (i32.const 512))
      (if (i32.eqz (local.get $i))
        (then (local.set $e (call $recv (local.get $c) (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 24) (i32.const 28))))
        (else (local.set $e (call $fd_read (local.get $c) (i32.const 16) (i32.const 1) (i32.const 24)))))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 200) (local.get $e)))))
      (i32.store (i32.const 32) (i32.const 300))
      (i32.store (i32.const 36) (i32.const 6))
      (i32.store (i32.const 40) (i32.const 1024))
      (i32.store (i32.const 44) (i32.load (i32.const 24)))
      (if (i32.eqz (local.get $i))
        (then (local.set $e (call $send (local.get $c) (i32.const 32) (i32.const 2) (i32.const 0) (i32.const 48))))
        (else (local.set $e (call $fd_write (local.get $c) (i32.const 32) (i32.const 2) (i32.const 48)))))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 300) (local.get $e)))))
      (drop (call $shutdown (local.get $c) (i32.const 2)))
      (if (call $close (local.get $c)) (then (call $exit (i32.const 13))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $conns (i32.lt_u (local.get $i) (i32.const {connections}))))
    (call $exit (i32.const 0))))"#
    ))
    .expect("valid WAT")
}

/// The contest's steps, each a NUL-terminated name at a fixed place in its memory (from 512,
/// 16 bytes apart) and a global `$S_<name>` holding that place.
const STEPS: &[&str] = &[
    "out",
    "err",
    "exit",
    "cat",
    "count-stdin",
    "fill",
    "count",
    "busy",
    "alloc",
    "sleep",
    "spin",
    "args",
    "env",
];

/// The contest module's code. Memory: 0..16 an iovec and the byte count; 16..24 sizes;
/// 64..112 a clock subscription, 128..160 its event, 160 the event count; 512.. the step
/// names; 1024..1056 digits; 1100.. messages; page 1 the I/O buffer; from page 2 argv's
/// pointers, then its strings.
pub const CONTEST_WAT: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 3)
  (global $io i32 (i32.const 65536))
  (global $argv i32 (i32.const 131072))
  (global $argc (mut i32) (i32.const 0))
  (global $argbuf (mut i32) (i32.const 0))
  (global $argbuf_len (mut i32) (i32.const 0))
  (data (i32.const 1100) "contest: \00")
  (data (i32.const 1120) "unknown step \00")
  (data (i32.const 1140) "missing operand of \00")
  (data (i32.const 1170) "not a number: \00")
  (data (i32.const 1190) "reading stdin failed, errno \00")
  (data (i32.const 1220) "poll_oneoff failed, errno \00")
  (data (i32.const 1250) "memory.grow refused after (bytes) \00")
  (data (i32.const 1290) "\n\00")

  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $end (loop $l
      (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    (local.get $n))

  (func $streq (param $a i32) (param $b i32) (result i32) (local $c i32)
    (loop $l
      (local.set $c (i32.load8_u (local.get $a)))
      (if (i32.ne (local.get $c) (i32.load8_u (local.get $b))) (then (return (i32.const 0))))
      (if (i32.eqz (local.get $c)) (then (return (i32.const 1))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $l))
    (unreachable))

  ;; Writes all of [p, p+len) to fd, however little each fd_write takes; exits 120 if it fails.
  (func $write_all (param $fd i32) (param $p i32) (param $len i32)
    (block $done (loop $l
      (br_if $done (i32.le_s (local.get $len) (i32.const 0)))
      (i32.store (i32.const 0) (local.get $p))
      (i32.store (i32.const 4) (local.get $len))
      (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 120))))
      (local.set $p (i32.add (local.get $p) (i32.load (i32.const 8))))
      (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
      (br $l))))

  (func $print (param $fd i32) (param $s i32)
    (call $write_all (local.get $fd) (local.get $s) (call $strlen (local.get $s))))

  ;; The decimal of v and a newline, to fd.
  (func $print_num (param $fd i32) (param $v i64) (local $p i32)
    (local.set $p (i32.const 1055))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $l (i64.ne (local.get $v) (i64.const 0))))
    (call $write_all (local.get $fd) (local.get $p) (i32.sub (i32.const 1056) (local.get $p))))

  ;; "contest: MSG DETAIL\n" on stderr, exit 2.
  (func $die (param $msg i32) (param $detail i32)
    (call $print (i32.const 2) (i32.const 1100))
    (call $print (i32.const 2) (local.get $msg))
    (call $print (i32.const 2) (local.get $detail))
    (call $print (i32.const 2) (i32.const 1290))
    (call $proc_exit (i32.const 2)))

  ;; "contest: MSG N\n" on stderr, exit with code.
  (func $die_num (param $msg i32) (param $n i64) (param $code i32)
    (call $print (i32.const 2) (i32.const 1100))
    (call $print (i32.const 2) (local.get $msg))
    (call $print_num (i32.const 2) (local.get $n))
    (call $proc_exit (local.get $code)))

  (func $atoi (param $s i32) (result i64) (local $p i32) (local $c i32) (local $v i64)
    (local.set $p (local.get $s))
    (if (i32.eqz (i32.load8_u (local.get $p))) (then (call $die (i32.const 1170) (local.get $s))))
    (block $end (loop $l
      (local.set $c (i32.load8_u (local.get $p)))
      (br_if $end (i32.eqz (local.get $c)))
      (if (i32.gt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9))
        (then (call $die (i32.const 1170) (local.get $s))))
      (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
        (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (local.get $v))

  ;; Grows memory so that [0, end) is in it.
  (func $ensure (param $end i32) (local $have i32)
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (drop (memory.grow (i32.add (i32.const 1)
        (i32.div_u (i32.sub (local.get $end) (local.get $have)) (i32.const 65536))))))))

  (func $load_args
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (global.set $argc (i32.load (i32.const 16)))
    (global.set $argbuf_len (i32.load (i32.const 20)))
    (global.set $argbuf (i32.add (global.get $argv) (i32.mul (global.get $argc) (i32.const 4))))
    (call $ensure (i32.add (global.get $argbuf) (global.get $argbuf_len)))
    (drop (call $args_get (global.get $argv) (global.get $argbuf))))

  ;; argv[i], or a "missing operand" exit naming argv[i-1] (the step).
  (func $arg (param $i i32) (result i32)
    (if (i32.ge_u (local.get $i) (global.get $argc))
      (then (call $die (i32.const 1140) (call $arg (i32.sub (local.get $i) (i32.const 1))))))
    (i32.load (i32.add (global.get $argv) (i32.mul (local.get $i) (i32.const 4)))))

  ;; Reads stdin to its end, copying it to stdout if asked; the byte count.
  (func $drain_stdin (param $copy i32) (result i64) (local $n i32) (local $e i32) (local $total i64)
    (block $eof (loop $l
      (i32.store (i32.const 0) (global.get $io))
      (i32.store (i32.const 4) (i32.const 65536))
      (local.set $e (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (local.get $e) (then (call $die_num (i32.const 1190) (i64.extend_i32_u (local.get $e)) (i32.const 2))))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $eof (i32.eqz (local.get $n)))
      (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $n))))
      (if (local.get $copy) (then (call $write_all (i32.const 1) (global.get $io) (local.get $n))))
      (br $l)))
    (local.get $total))

  (func $fill (param $n i64) (param $byte i32) (local $chunk i32)
    (memory.fill (global.get $io) (local.get $byte) (i32.const 65536))
    (block $done (loop $l
      (br_if $done (i64.eqz (local.get $n)))
      (local.set $chunk (if (result i32) (i64.gt_u (local.get $n) (i64.const 65536))
        (then (i32.const 65536)) (else (i32.wrap_i64 (local.get $n)))))
      (call $write_all (i32.const 1) (global.get $io) (local.get $chunk))
      (local.set $n (i64.sub (local.get $n) (i64.extend_i32_u (local.get $chunk))))
      (br $l))))

  ;; One relative CLOCK_MONOTONIC subscription of ms milliseconds.
  (func $sleep_ms (param $ms i64) (local $e i32)
    (memory.fill (i32.const 64) (i32.const 0) (i32.const 100))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.mul (local.get $ms) (i64.const 1000000)))
    (local.set $e (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160)))
    (if (local.get $e) (then (call $die_num (i32.const 1220) (i64.extend_i32_u (local.get $e)) (i32.const 2)))))

  ;; Grows memory page by page by `bytes`, writing to every 4 KiB of each new page.
  (func $alloc (param $bytes i64) (local $got i64) (local $page i32) (local $p i32)
    (block $done (loop $l
      (br_if $done (i64.ge_u (local.get $got) (local.get $bytes)))
      (local.set $page (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $page) (i32.const -1))
        (then (call $die_num (i32.const 1250) (local.get $got) (i32.const 12))))
      (local.set $p (i32.mul (local.get $page) (i32.const 65536)))
      (loop $touch
        (i32.store8 (local.get $p) (i32.const 1))
        (local.set $p (i32.add (local.get $p) (i32.const 4096)))
        (br_if $touch (i32.rem_u (local.get $p) (i32.const 65536))))
      (local.set $got (i64.add (local.get $got) (i64.const 65536)))
      (br $l))))

  (func $env (local $count i32) (local $strings i32)
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $count (i32.load (i32.const 16)))
    (local.set $strings (i32.add (global.get $argbuf) (global.get $argbuf_len)))
    (local.set $strings (i32.add (local.get $strings) (i32.mul (local.get $count) (i32.const 4))))
    (call $ensure (i32.add (local.get $strings) (i32.load (i32.const 20))))
    (drop (call $environ_get (i32.add (global.get $argbuf) (global.get $argbuf_len)) (local.get $strings)))
    (call $write_all (i32.const 1) (local.get $strings) (i32.load (i32.const 20))))

  (func (export "_start") (local $i i32) (local $step i32) (local $n i64) (local $k i64)
    (call $load_args)
    (if (call $applet_mode) (then (call $applet_main)))
    (local.set $i (i32.const 1))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (global.get $argc)))
      (local.set $step (call $arg (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (block $known
        (if (call $streq (local.get $step) (global.get $S_out)) (then
          (call $print (i32.const 1) (call $arg (local.get $i)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_err)) (then
          (call $print (i32.const 2) (call $arg (local.get $i)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_exit)) (then
          (call $proc_exit (i32.wrap_i64 (call $atoi (call $arg (local.get $i)))))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_cat)) (then
          (drop (call $drain_stdin (i32.const 1)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_count-stdin)) (then
          (call $print_num (i32.const 1) (call $drain_stdin (i32.const 0)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_fill)) (then
          (local.set $n (call $atoi (call $arg (local.get $i))))
          (call $fill (local.get $n)
            (i32.load8_u (call $arg (i32.add (local.get $i) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 2)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_count)) (then
          (local.set $n (call $atoi (call $arg (local.get $i))))
          (loop $forever
            (local.set $k (i64.add (local.get $k) (i64.const 1)))
            (call $print_num (i32.const 1) (local.get $k))
            (call $sleep_ms (local.get $n))
            (br $forever))))
        (if (call $streq (local.get $step) (global.get $S_busy)) (then
          (local.set $n (call $atoi (call $arg (local.get $i))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (block $idle (loop $spin
            (br_if $idle (i64.eqz (local.get $n)))
            (local.set $n (i64.sub (local.get $n) (i64.const 1)))
            (br $spin)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_alloc)) (then
          (call $alloc (call $atoi (call $arg (local.get $i))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_sleep)) (then
          (loop $forever
            (call $sleep_ms (i64.const 100))
            (br $forever))))
        (if (call $streq (local.get $step) (global.get $S_spin)) (then
          (loop $forever (br $forever))))
        (if (call $streq (local.get $step) (global.get $S_args)) (then
          (call $write_all (i32.const 1) (global.get $argbuf) (global.get $argbuf_len))
          (br $known)))
        (if (call $streq (local.get $step) (global.get $S_env)) (then
          (call $env)
          (br $known)))
        (call $die (i32.const 1120) (local.get $step)))
      (br $next))))
"#;

/// The words the contest's shell compares with, each NUL-terminated at a fixed place in its
/// memory (from 2048, 16 bytes apart) and a global `$W_<id>` holding that place.
const SH_WORDS: &[(&str, &str)] = &[
    ("while", "while"),
    ("do", "do"),
    ("done", "done"),
    ("echo", "echo"),
    ("dash_n", "-n"),
    ("true", "true"),
    ("colon", ":"),
    ("false", "false"),
    ("sleep", "sleep"),
    ("top", "top"),
    ("exit", "exit"),
    ("touch", "touch"),
    ("lbracket", "["),
    ("rbracket", "]"),
    ("test", "test"),
    ("dash_f", "-f"),
    ("dash_e", "-e"),
    ("dash_d", "-d"),
    ("cat", "cat"),
    ("sh", "sh"),
    ("dash_c", "-c"),
    ("dot", "."),
    ("dotwasm", ".wasm"),
];

/// The shell's messages: NUL-terminated from 4096, 64 bytes apart, global `$T_<id>`.
const SH_TEXTS: &[(&str, &str)] = &[
    ("space", " "),
    ("nl", "\n"),
    ("colon", ": "),
    ("sh", "sh: "),
    ("notfound", ": not found\n"),
    ("badargs", ": unsupported arguments\n"),
    ("unsupported", "unsupported shell syntax at "),
    ("missing", "shell syntax: missing "),
    ("quote", "closing quote"),
    ("usage", "sh takes -c SCRIPT or a script on stdin, not "),
    ("toolong", "a script longer than 64 KiB"),
    ("longline", "a line of stdin longer than 64 KiB"),
    ("badnum", "sleep: invalid number "),
    ("errno", "errno "),
    ("e_perm", "Operation not permitted"),
    ("e_acces", "Permission denied"),
    ("e_noent", "No such file or directory"),
    ("e_rofs", "Read-only file system"),
    ("e_exist", "File exists"),
    ("e_isdir", "Is a directory"),
    ("e_notdir", "Not a directory"),
    ("e_notcapable", "Capabilities insufficient"),
];

/// The contest's applet mode (module docs): when argv[0] does not end in `.wasm`, its base
/// name is a command, `sh` a small shell. Memory: from the end of argv's strings, 64 KiB for
/// a line of stdin, 128 KiB of token text, the token pointers (4 bytes each) and kinds (a
/// byte: 0 word, 1 `;` or newline, 2 `&&`, 3 `||`); an opened fd at 32, a filestat at 192.
const CONTEST_SH_WAT: &str = r#"
  (global $sh_line (mut i32) (i32.const 0))
  (global $sh_text (mut i32) (i32.const 0))
  (global $sh_ptr (mut i32) (i32.const 0))
  (global $sh_kind (mut i32) (i32.const 0))
  (global $sh_status (mut i32) (i32.const 0))

  ;; What follows the last '/' of p.
  (func $basename (param $p i32) (result i32) (local $r i32)
    (local.set $r (local.get $p))
    (block $end (loop $l
      (br_if $end (i32.eqz (i32.load8_u (local.get $p))))
      (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 47))
        (then (local.set $r (i32.add (local.get $p) (i32.const 1)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (local.get $r))

  ;; argv[0] names a command (sh, echo, top...), not the module's .wasm path.
  (func $applet_mode (result i32) (local $p i32) (local $n i32)
    (if (i32.eqz (global.get $argc)) (then (return (i32.const 0))))
    (local.set $p (i32.load (global.get $argv)))
    (local.set $n (call $strlen (local.get $p)))
    (if (i32.lt_u (local.get $n) (i32.const 5)) (then (return (i32.const 1))))
    (i32.eqz (call $streq (i32.add (local.get $p) (i32.sub (local.get $n) (i32.const 5)))
      (global.get $W_dotwasm))))

  (func $sh_init (local $base i32)
    (local.set $base (i32.and
      (i32.add (i32.add (global.get $argbuf) (global.get $argbuf_len)) (i32.const 31))
      (i32.const -16)))
    (global.set $sh_line (local.get $base))
    (global.set $sh_text (i32.add (local.get $base) (i32.const 65536)))
    (global.set $sh_ptr (i32.add (local.get $base) (i32.const 196608)))
    (global.set $sh_kind (i32.add (local.get $base) (i32.const 458752)))
    (call $ensure (i32.add (local.get $base) (i32.const 524288))))

  (func $tok (param $i i32) (result i32)
    (i32.load (i32.add (global.get $sh_ptr) (i32.shl (local.get $i) (i32.const 2)))))
  (func $kind (param $i i32) (result i32)
    (i32.load8_u (i32.add (global.get $sh_kind) (local.get $i))))
  (func $set_tok (param $i i32) (param $p i32) (param $k i32)
    (i32.store (i32.add (global.get $sh_ptr) (i32.shl (local.get $i) (i32.const 2))) (local.get $p))
    (i32.store8 (i32.add (global.get $sh_kind) (local.get $i)) (local.get $k)))
  ;; Token i is the word s.
  (func $is (param $i i32) (param $s i32) (result i32)
    (if (result i32) (call $kind (local.get $i))
      (then (i32.const 0))
      (else (call $streq (call $tok (local.get $i)) (local.get $s)))))

  ;; A character that ends an unquoted word.
  (func $sh_breaks (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.or (i32.eqz (local.get $c)) (i32.eq (local.get $c) (i32.const 32)))
              (i32.or (i32.eq (local.get $c) (i32.const 9)) (i32.eq (local.get $c) (i32.const 10))))
      (i32.or (i32.eq (local.get $c) (i32.const 59))
              (i32.or (i32.eq (local.get $c) (i32.const 38)) (i32.eq (local.get $c) (i32.const 124))))))

  ;; Splits the script s into tokens from index 0; their count. Words: unquoted characters,
  ;; '...' taken as is, "..." with \" \\ \$ \` escapes, \c; no expansion of any kind.
  (func $sh_lex (param $s i32) (result i32) (local $n i32) (local $out i32) (local $c i32) (local $q i32)
    (local.set $out (global.get $sh_text))
    (block $end (loop $next
      (local.set $c (i32.load8_u (local.get $s)))
      (br_if $end (i32.eqz (local.get $c)))
      (if (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
        (then (local.set $s (i32.add (local.get $s) (i32.const 1))) (br $next)))
      ;; a comment, to the end of its line
      (if (i32.eq (local.get $c) (i32.const 35)) (then
        (block $eol (loop $skip
          (local.set $c (i32.load8_u (local.get $s)))
          (br_if $eol (i32.or (i32.eqz (local.get $c)) (i32.eq (local.get $c) (i32.const 10))))
          (local.set $s (i32.add (local.get $s) (i32.const 1)))
          (br $skip)))
        (br $next)))
      (if (i32.or (i32.eq (local.get $c) (i32.const 59)) (i32.eq (local.get $c) (i32.const 10))) (then
        (call $set_tok (local.get $n) (i32.const 0) (i32.const 1))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (br $next)))
      (if (i32.or (i32.eq (local.get $c) (i32.const 38)) (i32.eq (local.get $c) (i32.const 124))) (then
        ;; && and ||; a lone & or | (background, pipe) is not supported
        (if (i32.ne (i32.load8_u (i32.add (local.get $s) (i32.const 1))) (local.get $c))
          (then (call $die (global.get $T_unsupported) (local.get $s))))
        (call $set_tok (local.get $n) (i32.const 0)
          (if (result i32) (i32.eq (local.get $c) (i32.const 38)) (then (i32.const 2)) (else (i32.const 3))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (local.set $s (i32.add (local.get $s) (i32.const 2)))
        (br $next)))
      (call $set_tok (local.get $n) (local.get $out) (i32.const 0))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (block $wend (loop $wc
        (local.set $c (i32.load8_u (local.get $s)))
        (br_if $wend (call $sh_breaks (local.get $c)))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (if (i32.or (i32.eq (local.get $c) (i32.const 39)) (i32.eq (local.get $c) (i32.const 34))) (then
          (local.set $q (local.get $c))
          (block $qend (loop $qc
            (local.set $c (i32.load8_u (local.get $s)))
            (if (i32.eqz (local.get $c)) (then (call $die (global.get $T_missing) (global.get $T_quote))))
            (local.set $s (i32.add (local.get $s) (i32.const 1)))
            (br_if $qend (i32.eq (local.get $c) (local.get $q)))
            (if (i32.and (i32.eq (local.get $q) (i32.const 34)) (i32.eq (local.get $c) (i32.const 92))) (then
              (local.set $c (i32.load8_u (local.get $s)))
              (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const 34)) (i32.eq (local.get $c) (i32.const 92)))
                          (i32.or (i32.eq (local.get $c) (i32.const 36)) (i32.eq (local.get $c) (i32.const 96))))
                (then (local.set $s (i32.add (local.get $s) (i32.const 1))))
                (else (local.set $c (i32.const 92))))))
            (i32.store8 (local.get $out) (local.get $c))
            (local.set $out (i32.add (local.get $out) (i32.const 1)))
            (br $qc)))
          (br $wc)))
        (if (i32.eq (local.get $c) (i32.const 92)) (then
          (local.set $c (i32.load8_u (local.get $s)))
          (br_if $wend (i32.eqz (local.get $c)))
          (local.set $s (i32.add (local.get $s) (i32.const 1)))))
        (i32.store8 (local.get $out) (local.get $c))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (br $wc)))
      (i32.store8 (local.get $out) (i32.const 0))
      (local.set $out (i32.add (local.get $out) (i32.const 1)))
      (br $next)))
    (local.get $n))

  ;; Token i begins a command: the first, or after an operator, `while` or `do`.
  (func $cmdpos (param $i i32) (result i32)
    (if (i32.eqz (local.get $i)) (then (return (i32.const 1))))
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (if (call $kind (local.get $i)) (then (return (i32.const 1))))
    (i32.or (call $is (local.get $i) (global.get $W_while)) (call $is (local.get $i) (global.get $W_do))))

  ;; The `do` of the `while` whose condition starts at i.
  (func $sh_do (param $i i32) (param $b i32) (result i32)
    (block $out (loop $l
      (br_if $out (i32.ge_s (local.get $i) (local.get $b)))
      (if (i32.and (call $cmdpos (local.get $i)) (call $is (local.get $i) (global.get $W_do)))
        (then (return (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (call $die (global.get $T_missing) (global.get $W_do))
    (unreachable))

  ;; The `done` of the loop whose body starts at i (nested loops counted).
  (func $sh_done (param $i i32) (param $b i32) (result i32) (local $depth i32)
    (local.set $depth (i32.const 1))
    (block $out (loop $l
      (br_if $out (i32.ge_s (local.get $i) (local.get $b)))
      (if (call $cmdpos (local.get $i)) (then
        (if (call $is (local.get $i) (global.get $W_while))
          (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
        (if (call $is (local.get $i) (global.get $W_done)) (then
          (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
          (if (i32.eqz (local.get $depth)) (then (return (local.get $i))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (call $die (global.get $T_missing) (global.get $W_done))
    (unreachable))

  ;; Where the command at i ends: after its loop's `done`, else at the next operator.
  (func $sh_end (param $i i32) (param $b i32) (result i32)
    (if (call $is (local.get $i) (global.get $W_while)) (then
      (return (i32.add (i32.const 1) (call $sh_done
        (i32.add (call $sh_do (i32.add (local.get $i) (i32.const 1)) (local.get $b)) (i32.const 1))
        (local.get $b))))))
    (block $out (loop $l
      (br_if $out (i32.ge_s (local.get $i) (local.get $b)))
      (br_if $out (call $kind (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $i))

  ;; Runs the commands of tokens [a, b): `;` runs the next one, `&&` if the last succeeded,
  ;; `||` if it failed; `while LIST; do LIST; done`. The status of the last one run.
  (func $sh_list (param $a i32) (param $b i32) (result i32)
    (local $i i32) (local $e i32) (local $d i32) (local $op i32) (local $st i32)
    (local.set $i (local.get $a))
    (block $out (loop $l
      (br_if $out (i32.ge_s (local.get $i) (local.get $b)))
      (if (call $kind (local.get $i))
        (then (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
      (local.set $e (call $sh_end (local.get $i) (local.get $b)))
      (if (call $is (local.get $i) (global.get $W_while))
        (then
          (local.set $d (call $sh_do (i32.add (local.get $i) (i32.const 1)) (local.get $b)))
          (local.set $st (i32.const 0))
          (block $break (loop $again
            (br_if $break (call $sh_list (i32.add (local.get $i) (i32.const 1)) (local.get $d)))
            (local.set $st (call $sh_list (i32.add (local.get $d) (i32.const 1))
              (i32.sub (local.get $e) (i32.const 1))))
            (br $again))))
        (else (local.set $st (call $sh_cmd (local.get $i) (local.get $e)))))
      (global.set $sh_status (local.get $st))
      (local.set $i (local.get $e))
      (block $run (loop $skip
        (br_if $run (i32.ge_s (local.get $i) (local.get $b)))
        (local.set $op (call $kind (local.get $i)))
        (br_if $run (i32.eqz (local.get $op)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $run (i32.eq (local.get $op) (i32.const 1)))
        (br_if $run (i32.eq (i32.eq (local.get $op) (i32.const 2)) (i32.eqz (local.get $st))))
        (br_if $run (i32.ge_s (local.get $i) (local.get $b)))
        (local.set $i (call $sh_end (local.get $i) (local.get $b)))
        (br $skip)))
      (br $l)))
    (local.get $st))

  ;; proc_exit with a shell status; WASI takes 0..=125, so 126 and above exit 125.
  (func $sh_exit (param $code i32)
    (call $proc_exit (if (result i32) (i32.gt_u (local.get $code) (i32.const 125))
      (then (i32.const 125)) (else (local.get $code)))))

  ;; "sh: NAME<what>" on stderr; status 2.
  (func $sh_complain (param $name i32) (param $what i32) (result i32)
    (call $print (i32.const 2) (global.get $T_sh))
    (call $print (i32.const 2) (local.get $name))
    (call $print (i32.const 2) (local.get $what))
    (i32.const 2))

  ;; The text of a WASI errno and a newline, on stderr.
  (func $print_errno (param $e i32)
    (block $known
      (if (i32.eq (local.get $e) (i32.const 63)) (then (call $print (i32.const 2) (global.get $T_e_perm)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 2)) (then (call $print (i32.const 2) (global.get $T_e_acces)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 44)) (then (call $print (i32.const 2) (global.get $T_e_noent)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 69)) (then (call $print (i32.const 2) (global.get $T_e_rofs)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 20)) (then (call $print (i32.const 2) (global.get $T_e_exist)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 31)) (then (call $print (i32.const 2) (global.get $T_e_isdir)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 54)) (then (call $print (i32.const 2) (global.get $T_e_notdir)) (br $known)))
      (if (i32.eq (local.get $e) (i32.const 76)) (then (call $print (i32.const 2) (global.get $T_e_notcapable)) (br $known)))
      (call $print (i32.const 2) (global.get $T_errno))
      (call $print_num (i32.const 2) (i64.extend_i32_u (local.get $e)))
      (return))
    (call $print (i32.const 2) (global.get $T_nl)))

  ;; "CMD: PATH: <errno text>" on stderr; status 1.
  (func $sh_fail (param $cmd i32) (param $path i32) (param $e i32) (result i32)
    (call $print (i32.const 2) (local.get $cmd))
    (call $print (i32.const 2) (global.get $T_colon))
    (call $print (i32.const 2) (local.get $path))
    (call $print (i32.const 2) (global.get $T_colon))
    (call $print_errno (local.get $e))
    (i32.const 1))

  ;; A path relative to the root filesystem's preopen (fd 3, the first): every path, relative
  ;; or absolute, is taken from / (critest's containers have / as their working directory).
  (func $sh_rel (param $p i32) (result i32)
    (block $end (loop $l
      (br_if $end (i32.ne (i32.load8_u (local.get $p)) (i32.const 47)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (if (result i32) (i32.load8_u (local.get $p)) (then (local.get $p)) (else (global.get $W_dot))))

  ;; path_open of path with oflags and rights; the errno, the fd at 32.
  (func $sh_open (param $path i32) (param $oflags i32) (param $rights i64) (result i32) (local $rel i32)
    (local.set $rel (call $sh_rel (local.get $path)))
    (call $path_open (i32.const 3) (i32.const 1) (local.get $rel) (call $strlen (local.get $rel))
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 32)))

  ;; echo [-n] WORDS: one write of the words, spaces between, a newline unless -n.
  (func $sh_echo (param $p i32) (param $q i32) (result i32) (local $nl i32) (local $out i32) (local $n i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (local.set $nl (i32.const 1))
    (if (i32.lt_s (local.get $p) (local.get $q)) (then
      (if (call $is (local.get $p) (global.get $W_dash_n)) (then
        (local.set $nl (i32.const 0))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))))))
    (local.set $out (global.get $io))
    (block $end (loop $l
      (br_if $end (i32.ge_s (local.get $p) (local.get $q)))
      (if (i32.ne (local.get $out) (global.get $io)) (then
        (i32.store8 (local.get $out) (i32.const 32))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))))
      (local.set $n (call $strlen (call $tok (local.get $p))))
      (if (i32.gt_u (i32.add (i32.sub (local.get $out) (global.get $io)) (local.get $n)) (i32.const 65000))
        (then (call $die (global.get $T_toolong) (global.get $W_echo))))
      (memory.copy (local.get $out) (call $tok (local.get $p)) (local.get $n))
      (local.set $out (i32.add (local.get $out) (local.get $n)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (if (local.get $nl) (then
      (i32.store8 (local.get $out) (i32.const 10))
      (local.set $out (i32.add (local.get $out) (i32.const 1)))))
    (call $write_all (i32.const 1) (global.get $io) (i32.sub (local.get $out) (global.get $io)))
    (i32.const 0))

  ;; Milliseconds of a duration in seconds ("1", "0.25"); -1 when it is not one.
  (func $sh_ms (param $s i32) (result i64) (local $v i64) (local $c i32) (local $frac i32) (local $scale i64)
    (if (i32.eqz (i32.load8_u (local.get $s))) (then (return (i64.const -1))))
    (block $end (loop $l
      (local.set $c (i32.load8_u (local.get $s)))
      (br_if $end (i32.eqz (local.get $c)))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (if (i32.eq (local.get $c) (i32.const 46)) (then
        (if (local.get $frac) (then (return (i64.const -1))))
        (local.set $frac (i32.const 1))
        (local.set $scale (i64.const 100))
        (br $l)))
      (if (i32.gt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9)) (then (return (i64.const -1))))
      (local.set $c (i32.sub (local.get $c) (i32.const 48)))
      (if (local.get $frac)
        (then
          (local.set $v (i64.add (local.get $v) (i64.mul (local.get $scale) (i64.extend_i32_u (local.get $c)))))
          (local.set $scale (i64.div_u (local.get $scale) (i64.const 10))))
        (else
          (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
            (i64.mul (i64.extend_i32_u (local.get $c)) (i64.const 1000))))))
      (br $l)))
    (local.get $v))

  ;; sleep SECONDS, 100 ms at a time.
  (func $sh_sleep (param $p i32) (param $q i32) (result i32) (local $ms i64)
    (if (i32.ne (i32.sub (local.get $q) (local.get $p)) (i32.const 2))
      (then (return (call $sh_complain (call $tok (local.get $p)) (global.get $T_badargs)))))
    (local.set $ms (call $sh_ms (call $tok (i32.add (local.get $p) (i32.const 1)))))
    (if (i64.lt_s (local.get $ms) (i64.const 0)) (then
      (call $print (i32.const 2) (global.get $T_badnum))
      (call $print (i32.const 2) (call $tok (i32.add (local.get $p) (i32.const 1))))
      (call $print (i32.const 2) (global.get $T_nl))
      (return (i32.const 1))))
    (block $end (loop $l
      (br_if $end (i64.eqz (local.get $ms)))
      (if (i64.lt_u (local.get $ms) (i64.const 100)) (then
        (call $sleep_ms (local.get $ms))
        (br $end)))
      (call $sleep_ms (i64.const 100))
      (local.set $ms (i64.sub (local.get $ms) (i64.const 100)))
      (br $l)))
    (i32.const 0))

  ;; touch FILES: each opened with O_CREAT (created if missing).
  (func $sh_touch (param $p i32) (param $q i32) (result i32) (local $e i32) (local $st i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (block $end (loop $l
      (br_if $end (i32.ge_s (local.get $p) (local.get $q)))
      ;; O_CREAT; rights fd_read | fd_write
      (local.set $e (call $sh_open (call $tok (local.get $p)) (i32.const 1) (i64.const 0x42)))
      (if (local.get $e)
        (then (local.set $st (call $sh_fail (global.get $W_touch) (call $tok (local.get $p)) (local.get $e))))
        (else (drop (call $fd_close (i32.load (i32.const 32))))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (local.get $st))

  ;; test -e|-f|-d PATH and [ -e|-f|-d PATH ]: 0 true, 1 false, 2 anything else.
  (func $sh_test (param $p i32) (param $q i32) (param $bracket i32) (result i32)
    (local $op i32) (local $rel i32) (local $type i32)
    (if (local.get $bracket) (then
      (if (i32.eqz (call $is (i32.sub (local.get $q) (i32.const 1)) (global.get $W_rbracket)))
        (then (return (call $sh_complain (call $tok (local.get $p)) (global.get $T_badargs)))))
      (local.set $q (i32.sub (local.get $q) (i32.const 1)))))
    (if (i32.ne (i32.sub (local.get $q) (local.get $p)) (i32.const 3))
      (then (return (call $sh_complain (call $tok (local.get $p)) (global.get $T_badargs)))))
    (local.set $op (call $tok (i32.add (local.get $p) (i32.const 1))))
    (if (i32.eqz (i32.or (call $streq (local.get $op) (global.get $W_dash_e))
        (i32.or (call $streq (local.get $op) (global.get $W_dash_f)) (call $streq (local.get $op) (global.get $W_dash_d)))))
      (then (return (call $sh_complain (call $tok (local.get $p)) (global.get $T_badargs)))))
    (local.set $rel (call $sh_rel (call $tok (i32.add (local.get $p) (i32.const 2)))))
    (if (call $path_filestat_get (i32.const 3) (i32.const 1) (local.get $rel) (call $strlen (local.get $rel)) (i32.const 192))
      (then (return (i32.const 1))))
    ;; filestat: dev, ino, then the filetype byte (3 directory, 4 regular file)
    (local.set $type (i32.load8_u (i32.const 208)))
    (if (call $streq (local.get $op) (global.get $W_dash_f))
      (then (return (i32.ne (local.get $type) (i32.const 4)))))
    (if (call $streq (local.get $op) (global.get $W_dash_d))
      (then (return (i32.ne (local.get $type) (i32.const 3)))))
    (i32.const 0))

  ;; cat FILES (stdin without any).
  (func $sh_cat (param $p i32) (param $q i32) (result i32) (local $e i32) (local $fd i32) (local $st i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (if (i32.ge_s (local.get $p) (local.get $q)) (then
      (drop (call $drain_stdin (i32.const 1)))
      (return (i32.const 0))))
    (block $end (loop $l
      (br_if $end (i32.ge_s (local.get $p) (local.get $q)))
      ;; rights fd_read
      (local.set $e (call $sh_open (call $tok (local.get $p)) (i32.const 0) (i64.const 2)))
      (if (local.get $e)
        (then (local.set $st (call $sh_fail (global.get $W_cat) (call $tok (local.get $p)) (local.get $e))))
        (else
          (local.set $fd (i32.load (i32.const 32)))
          (block $eof (loop $r
            (i32.store (i32.const 0) (global.get $io))
            (i32.store (i32.const 4) (i32.const 65536))
            (local.set $e (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
            (if (local.get $e) (then
              (local.set $st (call $sh_fail (global.get $W_cat) (call $tok (local.get $p)) (local.get $e)))
              (br $eof)))
            (br_if $eof (i32.eqz (i32.load (i32.const 8))))
            (call $write_all (i32.const 1) (global.get $io) (i32.load (i32.const 8)))
            (br $r)))
          (drop (call $fd_close (local.get $fd)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (local.get $st))

  ;; The simple command of tokens [p, q), by the base name of its first word.
  (func $sh_cmd (param $p i32) (param $q i32) (result i32) (local $name i32)
    (local.set $name (call $basename (call $tok (local.get $p))))
    (if (call $streq (local.get $name) (global.get $W_echo))
      (then (return (call $sh_echo (local.get $p) (local.get $q)))))
    (if (i32.or (call $streq (local.get $name) (global.get $W_true)) (call $streq (local.get $name) (global.get $W_colon)))
      (then (return (i32.const 0))))
    (if (call $streq (local.get $name) (global.get $W_false))
      (then (return (i32.const 1))))
    ;; top: runs until killed
    (if (call $streq (local.get $name) (global.get $W_top))
      (then (loop $forever (call $sleep_ms (i64.const 100)) (br $forever))))
    (if (call $streq (local.get $name) (global.get $W_sleep))
      (then (return (call $sh_sleep (local.get $p) (local.get $q)))))
    (if (call $streq (local.get $name) (global.get $W_exit)) (then
      (call $sh_exit (if (result i32) (i32.gt_s (i32.sub (local.get $q) (local.get $p)) (i32.const 1))
        (then (i32.wrap_i64 (call $atoi (call $tok (i32.add (local.get $p) (i32.const 1))))))
        (else (global.get $sh_status))))))
    (if (call $streq (local.get $name) (global.get $W_touch))
      (then (return (call $sh_touch (local.get $p) (local.get $q)))))
    (if (call $streq (local.get $name) (global.get $W_lbracket))
      (then (return (call $sh_test (local.get $p) (local.get $q) (i32.const 1)))))
    (if (call $streq (local.get $name) (global.get $W_test))
      (then (return (call $sh_test (local.get $p) (local.get $q) (i32.const 0)))))
    (if (call $streq (local.get $name) (global.get $W_cat))
      (then (return (call $sh_cat (local.get $p) (local.get $q)))))
    (drop (call $sh_complain (call $tok (local.get $p)) (global.get $T_notfound)))
    (i32.const 127))

  (func $sh_script (param $s i32) (result i32)
    (if (i32.gt_u (call $strlen (local.get $s)) (i32.const 65535))
      (then (call $die (global.get $T_toolong) (global.get $T_nl))))
    (call $sh_list (i32.const 0) (call $sh_lex (local.get $s))))

  ;; sh without -c: runs stdin line by line; the status of the last command at its end.
  (func $sh_stdin (result i32) (local $fill i32) (local $nl i32) (local $e i32) (local $st i32)
    (loop $next
      ;; a whole line in the buffer?
      (local.set $nl (i32.const 0))
      (block $found (loop $scan
        (br_if $found (i32.ge_u (local.get $nl) (local.get $fill)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (global.get $sh_line) (local.get $nl))) (i32.const 10)))
        (local.set $nl (i32.add (local.get $nl) (i32.const 1)))
        (br $scan)))
      (if (i32.lt_u (local.get $nl) (local.get $fill)) (then
        (i32.store8 (i32.add (global.get $sh_line) (local.get $nl)) (i32.const 0))
        (local.set $st (call $sh_script (global.get $sh_line)))
        (local.set $nl (i32.add (local.get $nl) (i32.const 1)))
        (memory.copy (global.get $sh_line) (i32.add (global.get $sh_line) (local.get $nl))
          (i32.sub (local.get $fill) (local.get $nl)))
        (local.set $fill (i32.sub (local.get $fill) (local.get $nl)))
        (br $next)))
      (if (i32.ge_u (local.get $fill) (i32.const 65535))
        (then (call $die (global.get $T_longline) (global.get $T_nl))))
      (i32.store (i32.const 0) (i32.add (global.get $sh_line) (local.get $fill)))
      (i32.store (i32.const 4) (i32.sub (i32.const 65535) (local.get $fill)))
      (local.set $e (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (local.get $e) (then (call $die_num (i32.const 1190) (i64.extend_i32_u (local.get $e)) (i32.const 2))))
      (if (i32.load (i32.const 8)) (then
        (local.set $fill (i32.add (local.get $fill) (i32.load (i32.const 8))))
        (br $next))))
    ;; end of stdin: the last line, if it has no newline
    (if (local.get $fill) (then
      (i32.store8 (i32.add (global.get $sh_line) (local.get $fill)) (i32.const 0))
      (local.set $st (call $sh_script (global.get $sh_line)))))
    (local.get $st))

  ;; Applet mode's main: sh -c SCRIPT, sh reading stdin, or the command argv is.
  (func $applet_main (local $i i32)
    (call $sh_init)
    (if (call $streq (call $basename (i32.load (global.get $argv))) (global.get $W_sh)) (then
      (if (i32.eq (global.get $argc) (i32.const 1))
        (then (call $sh_exit (call $sh_stdin))))
      (if (i32.and (i32.ge_u (global.get $argc) (i32.const 3))
                   (call $streq (call $arg (i32.const 1)) (global.get $W_dash_c)))
        (then (call $sh_exit (call $sh_script (call $arg (i32.const 2))))))
      (call $die (global.get $T_usage) (call $arg (i32.const 1)))))
    (block $end (loop $l
      (br_if $end (i32.ge_u (local.get $i) (global.get $argc)))
      (call $set_tok (local.get $i) (call $arg (local.get $i)) (i32.const 0))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (call $sh_exit (call $sh_cmd (i32.const 0) (global.get $argc))))
"#;

/// `(data ...)` and `(global ...)` of NUL-terminated `texts` from `at`, `stride` bytes apart:
/// `$<prefix><id>` holds each one's place.
fn wat_strings(prefix: &str, at: usize, stride: usize, texts: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, (id, text)) in texts.iter().enumerate() {
        assert!(text.len() < stride, "{id}: longer than its slot");
        let place = at + stride * k;
        let escaped: String = text
            .bytes()
            .map(|b| match b {
                b' '..=b'~' if b != b'"' && b != b'\\' => (b as char).to_string(),
                _ => format!("\\{b:02x}"),
            })
            .collect();
        out.push_str(&format!(
            "(data (i32.const {place}) \"{escaped}\\00\") (global ${prefix}{id} i32 (i32.const {place}))\n"
        ));
    }
    out
}

/// The contest module's bytes (compiled from [`CONTEST_WAT`] once).
pub fn contest_module() -> &'static [u8] {
    static MODULE: OnceLock<Vec<u8>> = OnceLock::new();
    MODULE.get_or_init(|| {
        let mut names = String::new();
        for (k, name) in STEPS.iter().enumerate() {
            let at = 512 + 16 * k;
            names.push_str(&format!(
                "(data (i32.const {at}) \"{name}\\00\") (global $S_{name} i32 (i32.const {at}))\n"
            ));
        }
        names.push_str(&wat_strings("W_", 2048, 16, SH_WORDS));
        names.push_str(&wat_strings("T_", 4096, 64, SH_TEXTS));
        wat::parse_str(format!("(module {CONTEST_WAT} {CONTEST_SH_WAT} {names})"))
            .expect("the contest WAT")
    })
}

/// Whether the suite runs its containers as WebAssembly: Strata on the wasm tier.
pub fn runs_wasm(h: &Harness) -> bool {
    h.runtime == Runtime::Strata && h.tier == Tier::Wasm
}

/// Whether the suite's containers can take `ctr task exec` (a wasm task is one module
/// instance: no exec, as in runwasi).
pub fn has_exec(h: &Harness) -> bool {
    !runs_wasm(h)
}

/// The exit statuses to try a workload with: up to 255 where the workload is a process, up
/// to [`WASI_MAX_EXIT`] for a WASI module.
pub fn exit_codes(h: &Harness) -> &'static [i32] {
    if runs_wasm(h) {
        &[0, 1, 3, WASI_MAX_EXIT]
    } else {
        &[0, 1, 3, 255]
    }
}

#[derive(Debug, Clone)]
enum Step {
    Out(String),
    Err(String),
    Exit(i32),
    Cat,
    CountStdin,
    Fill(u64, char),
    Count(u64),
    Busy(u64),
    Alloc(u64),
    Sleep,
    Spin,
    Children(usize),
}

/// What a container's process does, for any tier: built step by step, rendered as a busybox
/// shell command or as the contest module's argv ([`Workload::argv`]).
#[derive(Debug, Clone, Default)]
pub struct Workload {
    steps: Vec<Step>,
    on_sigterm: Option<(String, i32)>,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Workload {
    pub fn new() -> Workload {
        Workload::default()
    }

    fn then(mut self, step: Step) -> Workload {
        self.steps.push(step);
        self
    }

    /// Writes `text` to stdout.
    pub fn out(self, text: &str) -> Workload {
        self.then(Step::Out(text.into()))
    }

    /// Writes `text` to stderr.
    pub fn err(self, text: &str) -> Workload {
        self.then(Step::Err(text.into()))
    }

    /// Exits with `code` (at most [`WASI_MAX_EXIT`] on wasm).
    pub fn exit(self, code: i32) -> Workload {
        self.then(Step::Exit(code))
    }

    /// Copies stdin to stdout until its end.
    pub fn cat(self) -> Workload {
        self.then(Step::Cat)
    }

    /// Reads stdin to its end and prints how many bytes it read (as `wc -c`).
    pub fn count_stdin(self) -> Workload {
        self.then(Step::CountStdin)
    }

    /// Writes `n` bytes of `c` to stdout.
    pub fn fill(self, n: u64, c: char) -> Workload {
        assert!(c.is_ascii_alphanumeric(), "fill takes a plain character");
        self.then(Step::Fill(n, c))
    }

    /// Prints 1, 2, 3..., one a line, every `ms` milliseconds, until killed.
    pub fn count(self, ms: u64) -> Workload {
        self.then(Step::Count(ms))
    }

    /// Burns a little CPU: a loop of `n` iterations.
    pub fn busy(self, n: u64) -> Workload {
        self.then(Step::Busy(n))
    }

    /// Allocates `bytes` and touches every page of them.
    pub fn alloc(self, bytes: u64) -> Workload {
        self.then(Step::Alloc(bytes))
    }

    /// Sleeps until killed.
    pub fn sleep(self) -> Workload {
        self.then(Step::Sleep)
    }

    /// A tight loop until killed.
    pub fn spin(self) -> Workload {
        self.then(Step::Spin)
    }

    /// Starts `n` child processes that sleep until killed. A WASI module cannot start a
    /// process: only `0` renders for wasm.
    pub fn children(self, n: usize) -> Workload {
        self.then(Step::Children(n))
    }

    /// On SIGTERM, prints `text` and exits with `code`. A process can; a WASI module cannot
    /// catch a signal (see [`catches_signals`]): rendering this for wasm panics.
    pub fn on_sigterm(mut self, text: &str, code: i32) -> Workload {
        self.on_sigterm = Some((text.into(), code));
        self
    }

    /// The busybox command: `sh -c SCRIPT`.
    pub fn shell(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some((text, code)) = &self.on_sigterm {
            parts.push(format!(
                "trap \"printf '%s' {}; exit {code}\" TERM",
                sh_quote(text).replace('"', "\\\"")
            ));
        }
        for step in &self.steps {
            parts.push(match step {
                Step::Out(t) => format!("printf '%s' {}", sh_quote(t)),
                Step::Err(t) => format!("printf '%s' {} >&2", sh_quote(t)),
                Step::Exit(code) => format!("exit {code}"),
                Step::Cat => "cat".into(),
                Step::CountStdin => "wc -c".into(),
                Step::Fill(n, c) => format!("head -c {n} /dev/zero | tr '\\0' {c}"),
                Step::Count(ms) => format!(
                    "i=0; while :; do i=$((i+1)); echo $i; sleep {}.{:03}; done",
                    ms / 1000,
                    ms % 1000
                ),
                Step::Busy(n) => format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"),
                // The workload ends with dd's status when dd fails (137 when OOM-killed), as
                // the contest does when it is killed itself.
                Step::Alloc(bytes) => {
                    format!("dd if=/dev/zero of=/dev/null bs={bytes} count=1 || exit $?")
                }
                // A trap runs only between commands: a shell that catches SIGTERM sleeps in
                // short steps; else the sleep is the process itself.
                Step::Sleep if self.on_sigterm.is_some() => "while :; do sleep 0.1; done".into(),
                Step::Sleep => "exec sleep 100000".into(),
                Step::Spin => "while :; do :; done".into(),
                Step::Children(n) => vec!["sleep 100000 &"; *n].join(" "),
            });
        }
        // Newlines, not `;`: a step may end in `&`.
        vec!["sh".into(), "-c".into(), parts.join("\n")]
    }

    /// The contest module's argv: [`CONTEST_PATH`] and the steps.
    pub fn wasi(&self) -> Vec<String> {
        assert!(
            self.on_sigterm.is_none(),
            "a WASI module cannot catch SIGTERM"
        );
        let mut argv = vec![CONTEST_PATH.to_string()];
        for step in &self.steps {
            let (name, operands): (&str, Vec<String>) = match step {
                Step::Out(t) => ("out", vec![t.clone()]),
                Step::Err(t) => ("err", vec![t.clone()]),
                Step::Exit(code) => {
                    assert!(
                        (0..=WASI_MAX_EXIT).contains(code),
                        "WASI exits with 0..={WASI_MAX_EXIT}, not {code}"
                    );
                    ("exit", vec![code.to_string()])
                }
                Step::Cat => ("cat", vec![]),
                Step::CountStdin => ("count-stdin", vec![]),
                Step::Fill(n, c) => ("fill", vec![n.to_string(), c.to_string()]),
                Step::Count(ms) => ("count", vec![ms.to_string()]),
                Step::Busy(n) => ("busy", vec![n.to_string()]),
                Step::Alloc(bytes) => ("alloc", vec![bytes.to_string()]),
                Step::Sleep => ("sleep", vec![]),
                Step::Spin => ("spin", vec![]),
                Step::Children(0) => continue,
                Step::Children(n) => panic!("a WASI module cannot start {n} processes"),
            };
            argv.push(name.into());
            argv.extend(operands);
        }
        argv
    }

    /// The process argv for the suite's target: the contest's on wasm, else busybox's.
    pub fn argv(&self, h: &Harness) -> Vec<String> {
        if runs_wasm(h) {
            self.wasi()
        } else {
            self.shell()
        }
    }
}

/// Whether the workload can catch a signal: a process can, a WASI module cannot (WASI has no
/// signal handlers; SIGTERM ends it as 143, see docs/wasm.md).
pub fn catches_signals(h: &Harness) -> bool {
    !runs_wasm(h)
}

/// Name of the image that holds the contest module.
pub const CONTEST_IMAGE: &str = "localhost/strata-test/contest:1";

/// The contest image: busybox plus the contest module at [`CONTEST_PATH`].
pub fn contest_image_builder() -> ImageBuilder {
    let mut image = ImageBuilder::busybox(CONTEST_IMAGE).expect("the busybox image");
    image.file(
        CONTEST_PATH.trim_start_matches('/'),
        contest_module().to_vec(),
        0o644,
    );
    image
}

/// The contest image ([`contest_image_builder`]), imported into the harness's namespace on
/// first use; its name.
pub fn contest_image(h: &Harness) -> String {
    static IMPORTED: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut imported = IMPORTED.get_or_init(Default::default).lock().unwrap();
    imported
        .entry(h.info.namespace.clone())
        .or_insert_with(|| {
            h.import_image(&contest_image_builder())
                .expect("importing the contest image");
            CONTEST_IMAGE.to_string()
        })
        .clone()
}

/// A WebAssembly busybox: busybox's layout (/bin with a symlink to /bin/busybox for every
/// applet, /etc/passwd, /tmp...) with the contest module as /bin/busybox, so that every
/// command name runs the contest in applet mode; not one ELF file. In a wasm pod each of its
/// containers runs on the wasm tier, whatever command it names (critest's `sh -c top`, `echo
/// hello World`...).
pub fn contest_shell_image_builder(name: &str) -> ImageBuilder {
    let mut image = ImageBuilder::busybox(name).expect("the busybox image");
    image.file("bin/busybox", contest_module().to_vec(), 0o755);
    image
}

/// The rootfs of a spec made by [`Container::spec`].
pub fn rootfs(spec: &Value) -> PathBuf {
    PathBuf::from(spec["root"]["path"].as_str().expect("spec has a root path"))
}

/// Writes `wasm` into the rootfs of `spec` at `path` (absolute inside the rootfs).
pub fn put_module(spec: &Value, path: &str, wasm: &[u8]) {
    let at = rootfs(spec).join(path.trim_start_matches('/'));
    std::fs::write(&at, wasm).unwrap_or_else(|e| panic!("writing {}: {e}", at.display()));
}

/// Writes `spec` to a file of the harness's own, for `ctr run --config`.
pub fn write_spec(h: &Harness, spec: &Value) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = h.info.state.join("specs");
    std::fs::create_dir_all(&dir).expect("creating the specs directory");
    let path = dir.join(format!(
        "w-{}-{}.json",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).expect("writing the spec");
    path
}

/// `ctr run --rm --config SPEC ID` in the background; the spec file is returned to be removed.
pub fn spawn_spec(c: &Container, spec: &Value) -> (Background, PathBuf) {
    let path = write_spec(c.h, spec);
    let mut cmd = c.h.ctr();
    cmd.args(["run", "--rm", "--runtime", &c.runtime]);
    cmd.arg("--fifo-dir").arg(c.h.fifo_dir());
    cmd.args(c.h.runtime_config_flags());
    cmd.arg("--config").arg(&path).arg(&c.id);
    (Background::spawn(cmd).expect("starting ctr"), path)
}

/// Running a [`Workload`] in a [`Container`]: the same calls as the harness's `run`, `spawn`,
/// `start`, with the workload rendered for the suite's target. On wasm the container runs the
/// contest image; elsewhere this is exactly the harness's busybox call.
pub trait WorkloadRun {
    /// `ctr run --rm`: runs to completion.
    fn run_workload(&self, w: &Workload) -> Output {
        self.run_workload_with(&[], w, None)
    }
    /// `ctr run --rm` with extra `flags`, feeding `stdin`.
    fn run_workload_with(&self, flags: &[&str], w: &Workload, stdin: Option<&[u8]>) -> Output;
    /// `ctr run --rm` in the background.
    fn spawn_workload(&self, flags: &[&str], w: &Workload) -> Background;
    /// `ctr run -d`; panics if that fails.
    fn start_workload(&self, flags: &[&str], w: &Workload);
    /// `ctr run -d`, returning what ctr said.
    fn try_start_workload(&self, flags: &[&str], w: &Workload) -> Output;
    /// A spec running `w` ([`Container::spec`]; on wasm with the contest in its rootfs).
    fn workload_spec(&self, w: &Workload) -> Value;
}

/// `ctr run` of the contest image, as the harness's own `ctr run` but for the image.
fn contest_run(c: &Container, detach: bool, flags: &[&str], w: &Workload) -> Command {
    let mut cmd = c.h.ctr();
    cmd.arg("run").arg(if detach { "-d" } else { "--rm" });
    cmd.arg("--fifo-dir").arg(c.h.fifo_dir());
    cmd.arg("--runtime").arg(&c.runtime);
    cmd.args(c.h.tier_flags()).args(flags);
    cmd.arg(contest_image(c.h)).arg(&c.id).args(w.wasi());
    cmd
}

impl WorkloadRun for Container<'_> {
    fn run_workload_with(&self, flags: &[&str], w: &Workload, stdin: Option<&[u8]>) -> Output {
        if !runs_wasm(self.h) {
            let argv = w.shell();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            return self.run_with(flags, &argv, stdin);
        }
        cmd::run(
            contest_run(self, false, flags, w),
            stdin,
            self.h.ctr_timeout(),
        )
        .expect("running ctr")
    }

    fn spawn_workload(&self, flags: &[&str], w: &Workload) -> Background {
        if !runs_wasm(self.h) {
            let argv = w.shell();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            return self.spawn(flags, &argv);
        }
        Background::spawn(contest_run(self, false, flags, w)).expect("starting ctr")
    }

    fn start_workload(&self, flags: &[&str], w: &Workload) {
        let out = self.try_start_workload(flags, w);
        assert!(out.success(), "starting {} failed: {out}", self.id);
    }

    fn try_start_workload(&self, flags: &[&str], w: &Workload) -> Output {
        if !runs_wasm(self.h) {
            let argv = w.shell();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            return self.try_start(flags, &argv);
        }
        cmd::run(
            contest_run(self, true, flags, w),
            None,
            self.h.ctr_timeout(),
        )
        .expect("running ctr")
    }

    fn workload_spec(&self, w: &Workload) -> Value {
        let argv = w.argv(self.h);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let spec = self.spec(&argv);
        if runs_wasm(self.h) {
            put_module(&spec, CONTEST_PATH, contest_module());
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contest_module_compiles() {
        assert_eq!(&contest_module()[..4], b"\0asm");
    }

    #[test]
    fn renders_for_both() {
        let w = Workload::new().out("it's\n").err("e").fill(3, 'a').exit(3);
        assert_eq!(
            w.shell()[2],
            "printf '%s' 'it'\\''s\n'\nprintf '%s' 'e' >&2\nhead -c 3 /dev/zero | tr '\\0' a\nexit 3"
        );
        assert_eq!(
            w.wasi(),
            [
                CONTEST_PATH,
                "out",
                "it's\n",
                "err",
                "e",
                "fill",
                "3",
                "a",
                "exit",
                "3"
            ]
        );
    }
}
