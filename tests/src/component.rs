//! WASI preview 2 components for the wasm tier's tests, written by hand in the component
//! model's text format (no wasm32 target is installed here to build them from Rust). Each
//! imports only the functions it calls, at version 0.2.0 of their interfaces; wasmtime links a
//! 0.2.x host to them.
//!
//! - [`printing`]: prints a text through `wasi:cli/stdout`.
//! - [`tcp_client`]: resolves a name (or takes an address), connects over TCP, sends a
//!   message, and prints what happened (`sent`, or the step that failed and its
//!   `wasi:sockets` error code, e.g. `connect: access-denied`).
//! - [`http_hello`]: a `wasi:http/proxy` component whose `incoming-handler` answers every
//!   request with `200` and a body naming the request's path.
//! - [`http_relay`]: a `wasi:http/proxy` component that asks an upstream server through
//!   `wasi:http/outgoing-handler` first and answers with what it got.

/// Escapes `text` for a WAT string.
fn wat_bytes(text: &[u8]) -> String {
    text.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The imports every component here makes: the error and stream resources, an output
/// stream's `blocking-write-and-flush`, and `wasi:cli/stdout`'s `get-stdout`. Defines the
/// component-level types `$output-stream` and `$input-stream`, and the instances `$streams`
/// and `$stdout`.
const IO_IMPORTS: &str = r#"
  (import "wasi:io/error@0.2.0" (instance $error (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-ty))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $error-ty (type $e))
    (export "error" (type $err (eq $e)))
    (type $own-err (own $err))
    (type $stream-error (variant (case "last-operation-failed" $own-err) (case "closed")))
    (export "stream-error" (type $se (eq $stream-error)))
    (export "input-stream" (type $is (sub resource)))
    (export "output-stream" (type $os (sub resource)))
    (type $borrow-os (borrow $os))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" $borrow-os) (param "contents" (list u8)) (result (result (error $se)))))))
  (alias export $streams "input-stream" (type $input-stream))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $output-stream (type $os0))
    (export "output-stream" (type $os (eq $os0)))
    (type $own-os (own $os))
    (export "get-stdout" (func (result $own-os)))))
  (core module $mem
    (memory (export "memory") 1)
    ;; cabi_realloc for what the host hands over (strings): a bump allocator from 8192
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $at i32)
      (local.set $at (i32.and (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
                              (i32.sub (i32.const 0) (local.get 2))))
      (global.set $next (i32.add (local.get $at) (local.get 3)))
      (local.get $at)))
  (core instance $mem-inst (instantiate $mem))
  (alias core export $mem-inst "memory" (core memory $memory))
  (alias core export $mem-inst "realloc" (core func $realloc))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush") (memory $memory)))
"#;

/// The end of every component here: core module `$main`'s `run` is `wasi:cli/run`'s.
const RUN_EXPORT: &str = r#"
  (func $run (result (result)) (canon lift (core func $main-inst "run")))
  (instance $run-inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-inst)))"#;

/// A wasi:cli/command component that prints `text` through `wasi:cli/stdout`; its `run`
/// returns the write's outcome.
pub fn printing(text: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component {IO_IMPORTS}
  (core func $drop-os (canon resource.drop $output-stream))
  (core module $main
    (import "host" "memory" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "drop" (func $drop (param i32)))
    (data (i32.const 64) "{text}")
    (func (export "run") (result i32) (local $out i32)
      (local.set $out (call $get-stdout))
      (call $write (local.get $out) (i32.const 64) (i32.const {len}) (i32.const 16))
      (call $drop (local.get $out))
      ;; the write's result<_, stream-error>: discriminant 0 is ok, so run returns ok too
      (i32.load8_u (i32.const 16))))
  (core instance $main-inst (instantiate $main
    (with "host" (instance
      (export "memory" (memory $memory))
      (export "get-stdout" (func $get-stdout))
      (export "write" (func $write))
      (export "drop" (func $drop-os)))))) {RUN_EXPORT}"#,
        len = text.len(),
        text = wat_bytes(text.as_bytes()),
    ))
    .expect("valid component WAT")
}

/// `wasi:sockets`' error codes, in the order of the enum (0.2.0 to 0.2.x).
pub const SOCKET_ERRORS: &[&str] = &[
    "unknown",
    "access-denied",
    "not-supported",
    "invalid-argument",
    "out-of-memory",
    "timeout",
    "concurrency-conflict",
    "not-in-progress",
    "would-block",
    "invalid-state",
    "new-socket-limit",
    "address-not-bindable",
    "address-in-use",
    "remote-unreachable",
    "connection-refused",
    "connection-reset",
    "connection-aborted",
    "datagram-too-large",
    "name-unresolvable",
    "temporary-resolver-failure",
    "permanent-resolver-failure",
];

/// `would-block`'s number in [`SOCKET_ERRORS`].
const WOULD_BLOCK: usize = 8;

/// Where [`tcp_client`] connects.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    /// A name, resolved with `wasi:sockets/ip-name-lookup` (its first IPv4 address).
    Name(&'a str),
    /// An IPv4 address, used as it is (no lookup).
    Ipv4([u8; 4]),
}

/// A wasi:cli/command component that connects to `peer`:`port` over TCP with
/// `wasi:sockets`, sends `message` and prints `sent` (run returns ok). A failed step prints
/// `STEP: ERROR-CODE` (`lookup`, `socket`, `connect`) or `write: failed`, and run returns
/// err (exit status 1).
pub fn tcp_client(peer: Peer<'_>, port: u16, message: &str) -> Vec<u8> {
    // Error names at 1024, 32 bytes each: a length byte, then the name.
    let names: String = SOCKET_ERRORS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "(data (i32.const {}) \"\\{:02x}{}\")\n",
                1024 + 32 * i,
                n.len(),
                n
            )
        })
        .collect();
    let (host, host_len, address) = match peer {
        Peer::Name(n) => (wat_bytes(n.as_bytes()), n.len(), None),
        Peer::Ipv4(a) => (String::new(), 0, Some(a)),
    };
    // The address's four bytes end up at 262..266, where the lookup leaves them.
    let lookup = match address {
        Some([a, b, c, d]) => format!(
            "(i32.store8 (i32.const 262) (i32.const {a})) (i32.store8 (i32.const 263) (i32.const {b}))
             (i32.store8 (i32.const 264) (i32.const {c})) (i32.store8 (i32.const 265) (i32.const {d}))"
        ),
        None => format!(
            r#";; resolve-addresses: result<own<resolve-address-stream>, error-code> at 256
            (call $resolve (local.get $net) (i32.const 512) (i32.const {host_len}) (i32.const 256))
            (if (i32.load8_u (i32.const 256))
              (then (return (call $fail (i32.const 700) (i32.const 6) (i32.load8_u (i32.const 260))))))
            (local.set $stream (i32.load (i32.const 260)))
            ;; resolve-next-address: result<option<ip-address>, error-code>; the option at 258,
            ;; the ip-address's case at 260, its IPv4 bytes at 262
            (block $found
              (loop $next
                (call $next-address (local.get $stream) (i32.const 256))
                (if (i32.load8_u (i32.const 256))
                  (then
                    (br_if $next (i32.eq (i32.load8_u (i32.const 258)) (i32.const {WOULD_BLOCK})))
                    (return (call $fail (i32.const 700) (i32.const 6) (i32.load8_u (i32.const 258))))))
                (if (i32.eqz (i32.load8_u (i32.const 258)))
                  (then (return (call $fail (i32.const 700) (i32.const 6) (i32.const 18)))))
                (br_if $found (i32.eqz (i32.load8_u (i32.const 260))))
                (br $next)))"#
        ),
    };
    wat::parse_str(format!(
        r#"(component {IO_IMPORTS}
  (import "wasi:sockets/network@0.2.0" (instance $network
    (export "network" (type (sub resource)))
    (type $ec (enum {errors}))
    (export "error-code" (type (eq $ec)))
    (type $family (enum "ipv4" "ipv6"))
    (export "ip-address-family" (type (eq $family)))
    (type $v4 (tuple u8 u8 u8 u8))
    (type $v6 (tuple u16 u16 u16 u16 u16 u16 u16 u16))
    (type $ia (variant (case "ipv4" $v4) (case "ipv6" $v6)))
    (export "ip-address" (type (eq $ia)))
    (type $sa4 (record (field "port" u16) (field "address" $v4)))
    (export "ipv4-socket-address" (type $sa4e (eq $sa4)))
    (type $sa6 (record (field "port" u16) (field "flow-info" u32) (field "address" $v6) (field "scope-id" u32)))
    (export "ipv6-socket-address" (type $sa6e (eq $sa6)))
    (type $isa (variant (case "ipv4" $sa4e) (case "ipv6" $sa6e)))
    (export "ip-socket-address" (type (eq $isa)))))
  (alias export $network "network" (type $network-ty))
  (alias export $network "error-code" (type $error-code))
  (alias export $network "ip-address-family" (type $ip-address-family))
  (alias export $network "ip-address" (type $ip-address))
  (alias export $network "ip-socket-address" (type $ip-socket-address))
  (import "wasi:sockets/instance-network@0.2.0" (instance $instance-network
    (alias outer 1 $network-ty (type $n0))
    (export "network" (type $n (eq $n0)))
    (type $own-n (own $n))
    (export "instance-network" (func (result $own-n)))))
  (import "wasi:sockets/ip-name-lookup@0.2.0" (instance $lookup
    (alias outer 1 $network-ty (type $n0))
    (export "network" (type $n (eq $n0)))
    (alias outer 1 $error-code (type $ec0))
    (export "error-code" (type $ec (eq $ec0)))
    (alias outer 1 $ip-address (type $ia0))
    (export "ip-address" (type $ia (eq $ia0)))
    (export "resolve-address-stream" (type $ras (sub resource)))
    (type $borrow-ras (borrow $ras))
    (type $own-ras (own $ras))
    (type $borrow-n (borrow $n))
    (export "[method]resolve-address-stream.resolve-next-address"
      (func (param "self" $borrow-ras) (result (result (option $ia) (error $ec)))))
    (export "resolve-addresses"
      (func (param "network" $borrow-n) (param "name" string) (result (result $own-ras (error $ec)))))))
  (import "wasi:sockets/tcp@0.2.0" (instance $tcp
    (alias outer 1 $network-ty (type $n0))
    (export "network" (type $n (eq $n0)))
    (alias outer 1 $input-stream (type $is0))
    (export "input-stream" (type $is (eq $is0)))
    (alias outer 1 $output-stream (type $os0))
    (export "output-stream" (type $os (eq $os0)))
    (alias outer 1 $error-code (type $ec0))
    (export "error-code" (type $ec (eq $ec0)))
    (alias outer 1 $ip-socket-address (type $isa0))
    (export "ip-socket-address" (type $isa (eq $isa0)))
    (export "tcp-socket" (type $sock (sub resource)))
    (type $borrow-sock (borrow $sock))
    (type $borrow-n (borrow $n))
    (type $own-is (own $is))
    (type $own-os (own $os))
    (export "[method]tcp-socket.start-connect"
      (func (param "self" $borrow-sock) (param "network" $borrow-n) (param "remote-address" $isa)
        (result (result (error $ec)))))
    (export "[method]tcp-socket.finish-connect"
      (func (param "self" $borrow-sock) (result (result (tuple $own-is $own-os) (error $ec)))))))
  (alias export $tcp "tcp-socket" (type $tcp-socket))
  (import "wasi:sockets/tcp-create-socket@0.2.0" (instance $create
    (alias outer 1 $tcp-socket (type $s0))
    (export "tcp-socket" (type $s (eq $s0)))
    (alias outer 1 $error-code (type $ec0))
    (export "error-code" (type $ec (eq $ec0)))
    (alias outer 1 $ip-address-family (type $f0))
    (export "ip-address-family" (type $f (eq $f0)))
    (type $own-s (own $s))
    (export "create-tcp-socket"
      (func (param "address-family" $f) (result (result $own-s (error $ec)))))))
  (core func $instance-network (canon lower (func $instance-network "instance-network")))
  (core func $resolve (canon lower (func $lookup "resolve-addresses") (memory $memory)))
  (core func $next-address (canon lower (func $lookup "[method]resolve-address-stream.resolve-next-address") (memory $memory)))
  (core func $create-tcp (canon lower (func $create "create-tcp-socket") (memory $memory)))
  (core func $start-connect (canon lower (func $tcp "[method]tcp-socket.start-connect") (memory $memory)))
  (core func $finish-connect (canon lower (func $tcp "[method]tcp-socket.finish-connect") (memory $memory)))
  (core module $main
    (import "host" "memory" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "instance-network" (func $instance-network (result i32)))
    (import "host" "resolve" (func $resolve (param i32 i32 i32 i32)))
    (import "host" "next-address" (func $next-address (param i32 i32)))
    (import "host" "create-tcp" (func $create-tcp (param i32 i32)))
    (import "host" "start-connect" (func $start-connect
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
    (import "host" "finish-connect" (func $finish-connect (param i32 i32)))
    (global $out (mut i32) (i32.const 0))
    {names}
    (data (i32.const 512) "{host}")
    (data (i32.const 700) "lookup")
    (data (i32.const 710) "socket")
    (data (i32.const 720) "connect")
    (data (i32.const 730) ": ")
    (data (i32.const 740) "\0a")
    (data (i32.const 750) "sent\0a")
    (data (i32.const 760) "write: failed\0a")
    (data (i32.const 2048) "{message}")
    (func $print (param $at i32) (param $len i32)
      (call $write (global.get $out) (local.get $at) (local.get $len) (i32.const 16)))
    ;; prints STEP: ERROR-CODE and returns err
    (func $fail (param $step i32) (param $len i32) (param $code i32) (result i32)
      (local $name i32)
      (local.set $name (i32.add (i32.const 1024) (i32.mul (local.get $code) (i32.const 32))))
      (call $print (local.get $step) (local.get $len))
      (call $print (i32.const 730) (i32.const 2))
      (call $print (i32.add (local.get $name) (i32.const 1)) (i32.load8_u (local.get $name)))
      (call $print (i32.const 740) (i32.const 1))
      (i32.const 1))
    (func (export "run") (result i32) (local $net i32) (local $stream i32) (local $sock i32)
      (global.set $out (call $get-stdout))
      (local.set $net (call $instance-network))
      {lookup}
      ;; the address, out of the way of the next results
      (i32.store (i32.const 300) (i32.load (i32.const 262)))
      ;; create-tcp-socket(ipv4): result<own<tcp-socket>, error-code> at 256
      (call $create-tcp (i32.const 0) (i32.const 256))
      (if (i32.load8_u (i32.const 256))
        (then (return (call $fail (i32.const 710) (i32.const 6) (i32.load8_u (i32.const 260))))))
      (local.set $sock (i32.load (i32.const 260)))
      ;; start-connect(ip-socket-address ipv4 {{ port, address }}), flattened: the case, then
      ;; eleven slots of which IPv4 uses five; result<_, error-code> at 256
      (call $start-connect (local.get $sock) (local.get $net)
        (i32.const 0) (i32.const {port})
        (i32.load8_u (i32.const 300)) (i32.load8_u (i32.const 301))
        (i32.load8_u (i32.const 302)) (i32.load8_u (i32.const 303))
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 256))
      (if (i32.load8_u (i32.const 256))
        (then (return (call $fail (i32.const 720) (i32.const 7) (i32.load8_u (i32.const 257))))))
      ;; finish-connect: result<tuple<input-stream, output-stream>, error-code> at 256
      (loop $wait
        (call $finish-connect (local.get $sock) (i32.const 256))
        (if (i32.load8_u (i32.const 256))
          (then
            (br_if $wait (i32.eq (i32.load8_u (i32.const 260)) (i32.const {WOULD_BLOCK})))
            (return (call $fail (i32.const 720) (i32.const 7) (i32.load8_u (i32.const 260)))))))
      (call $write (i32.load (i32.const 264)) (i32.const 2048) (i32.const {message_len}) (i32.const 16))
      (if (i32.load8_u (i32.const 16))
        (then (call $print (i32.const 760) (i32.const 14)) (return (i32.const 1))))
      (call $print (i32.const 750) (i32.const 5))
      (i32.const 0)))
  (core instance $main-inst (instantiate $main
    (with "host" (instance
      (export "memory" (memory $memory))
      (export "get-stdout" (func $get-stdout))
      (export "write" (func $write))
      (export "instance-network" (func $instance-network))
      (export "resolve" (func $resolve))
      (export "next-address" (func $next-address))
      (export "create-tcp" (func $create-tcp))
      (export "start-connect" (func $start-connect))
      (export "finish-connect" (func $finish-connect)))))) {RUN_EXPORT}"#,
        errors = SOCKET_ERRORS
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(" "),
        message = wat_bytes(message.as_bytes()),
        message_len = message.len(),
    ))
    .expect("valid component WAT")
}

/// The body [`http_hello`] answers a request for `path` with.
pub fn http_hello_body(path: &str) -> String {
    format!("hello from wasm at {path}\n")
}

/// A `wasi:http/proxy` component: `wasi:http/incoming-handler`'s `handle` answers `200` with
/// the body [`http_hello_body`] of the request's path and query, written through the
/// outgoing body's stream.
pub fn http_hello() -> Vec<u8> {
    let prefix = http_hello_body("");
    let prefix = prefix.trim_end_matches('\n');
    proxy(&format!(
        r#"(data (i32.const 1100) "{prefix}")
    (func (export "handle") (param $req i32) (param $out i32) (local $stream i32)
      ;; path-with-query: option<string> at 256 (the case, then pointer and length at 260)
      (call $path (local.get $req) (i32.const 256))
      (local.set $stream (call $respond (local.get $out)))
      (call $write (local.get $stream) (i32.const 1100) (i32.const {len}) (i32.const 16))
      (if (i32.load8_u (i32.const 256))
        (then (call $write (local.get $stream) (i32.load (i32.const 260)) (i32.load (i32.const 264)) (i32.const 16))))
      (call $end (local.get $stream)))"#,
        len = prefix.len()
    ))
}

/// The body [`http_relay`] answers with when its upstream answered `status`.
pub fn http_relay_body(status: u16) -> String {
    format!("upstream said {status}\n")
}

/// A `wasi:http/proxy` component whose handler first asks `http://{upstream}/upstream`
/// through `wasi:http/outgoing-handler` and answers `200` with [`http_relay_body`] of the
/// upstream's status, or `outgoing error N` / `upstream error N` with the number of the
/// `wasi:http` error code (15 is `HTTP-request-denied`, 13 `TLS-certificate-error`) when the
/// request failed.
pub fn http_relay(upstream: &str) -> Vec<u8> {
    http_relay_to(upstream, false)
}

/// [`http_relay`], asking `https://{upstream}/upstream` when `https`.
pub fn http_relay_to(upstream: &str, https: bool) -> Vec<u8> {
    proxy(&format!(
        r#"(data (i32.const 1100) "upstream said ")
    (data (i32.const 1130) "outgoing error ")
    (data (i32.const 1150) "upstream error ")
    (data (i32.const 1200) "{authority}")
    (data (i32.const 1280) "/upstream")
    ;; writes n (0..=999) in decimal
    (func $number (param $stream i32) (param $n i32)
      (i32.store8 (i32.const 1300) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 100))))
      (i32.store8 (i32.const 1301) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $n) (i32.const 10)) (i32.const 10))))
      (i32.store8 (i32.const 1302) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (call $write (local.get $stream) (i32.const 1300) (i32.const 3) (i32.const 16)))
    (func $say (param $out i32) (param $text i32) (param $len i32) (param $n i32) (local $stream i32)
      (local.set $stream (call $respond (local.get $out)))
      (call $write (local.get $stream) (local.get $text) (local.get $len) (i32.const 16))
      (call $number (local.get $stream) (local.get $n))
      (call $end (local.get $stream)))
    (func (export "handle") (param $req i32) (param $out i32) (local $oreq i32) (local $fut i32) (local $p i32)
      (local.set $oreq (call $new-request (call $new-fields)))
      ;; set-scheme(some(HTTP or HTTPS)), set-authority(some(upstream)), set-path-with-query(some(path))
      (drop (call $set-scheme (local.get $oreq) (i32.const 1) (i32.const {scheme}) (i32.const 0) (i32.const 0)))
      (drop (call $set-authority (local.get $oreq) (i32.const 1) (i32.const 1200) (i32.const {authority_len})))
      (drop (call $set-path (local.get $oreq) (i32.const 1) (i32.const 1280) (i32.const 9)))
      ;; handle(request, none): result<own<future-incoming-response>, error-code> at 400,
      ;; its payload at 408 (error-code is 8-aligned)
      (call $outgoing (local.get $oreq) (i32.const 0) (i32.const 0) (i32.const 400))
      (if (i32.load8_u (i32.const 400))
        (then (return (call $say (local.get $out) (i32.const 1130) (i32.const 15) (i32.load8_u (i32.const 408))))))
      (local.set $fut (i32.load (i32.const 408)))
      ;; get: option<result<result<own<incoming-response>, error-code>>> at 512; the option's
      ;; payload at 520, the outer result's at 528
      (loop $wait
        (call $get (local.get $fut) (i32.const 512))
        (if (i32.eqz (i32.load8_u (i32.const 512)))
          (then
            (local.set $p (call $subscribe (local.get $fut)))
            (call $block (local.get $p))
            (call $drop-pollable (local.get $p))
            (br $wait))))
      (if (i32.load8_u (i32.const 520)) (then unreachable))
      (if (i32.load8_u (i32.const 528))
        (then (return (call $say (local.get $out) (i32.const 1150) (i32.const 15) (i32.load8_u (i32.const 536))))))
      (call $say (local.get $out) (i32.const 1100) (i32.const 14) (call $status (i32.load (i32.const 536)))))"#,
        authority = upstream,
        authority_len = upstream.len(),
        scheme = u8::from(https),
    ))
}

/// `wasi:http/types`' error code and the records of its cases, as exports of the types
/// instance (a component names every record and variant it passes).
const HTTP_ERROR_CODE: &str = r#"
    (type $dns (record (field "rcode" (option string)) (field "info-code" (option u16))))
    (export "DNS-error-payload" (type $dns-e (eq $dns)))
    (type $tls (record (field "alert-id" (option u8)) (field "alert-message" (option string))))
    (export "TLS-alert-received-payload" (type $tls-e (eq $tls)))
    (type $fsp (record (field "field-name" (option string)) (field "field-size" (option u32))))
    (export "field-size-payload" (type $fsp-e (eq $fsp)))
    (type $ec (variant
      (case "DNS-timeout") (case "DNS-error" $dns-e) (case "destination-not-found")
      (case "destination-unavailable") (case "destination-IP-prohibited")
      (case "destination-IP-unroutable") (case "connection-refused")
      (case "connection-terminated") (case "connection-timeout")
      (case "connection-read-timeout") (case "connection-write-timeout")
      (case "connection-limit-reached") (case "TLS-protocol-error")
      (case "TLS-certificate-error") (case "TLS-alert-received" $tls-e)
      (case "HTTP-request-denied") (case "HTTP-request-length-required")
      (case "HTTP-request-body-size" (option u64)) (case "HTTP-request-method-invalid")
      (case "HTTP-request-URI-invalid") (case "HTTP-request-URI-too-long")
      (case "HTTP-request-header-section-size" (option u32))
      (case "HTTP-request-header-size" (option $fsp-e))
      (case "HTTP-request-trailer-section-size" (option u32))
      (case "HTTP-request-trailer-size" $fsp-e) (case "HTTP-response-incomplete")
      (case "HTTP-response-header-section-size" (option u32))
      (case "HTTP-response-header-size" $fsp-e)
      (case "HTTP-response-body-size" (option u64))
      (case "HTTP-response-trailer-section-size" (option u32))
      (case "HTTP-response-trailer-size" $fsp-e)
      (case "HTTP-response-transfer-coding" (option string))
      (case "HTTP-response-content-coding" (option string))
      (case "HTTP-response-timeout") (case "HTTP-upgrade-failed") (case "HTTP-protocol-error")
      (case "loop-detected") (case "configuration-error") (case "internal-error" (option string))))
    (export "error-code" (type $error-code (eq $ec)))"#;

/// A `wasi:http/proxy` component whose core module `$main` has the functions below and
/// `handle` (exported: the handler's `handle(request, response-out)`) written by `body`:
/// - `$respond(out) -> stream`: sets the response (200, no headers) and opens its body;
/// - `$write(stream, pointer, length, result)`, `$end(stream)`: write, then close the body;
/// - `$path(request, result)`: the request's path-with-query (an option of a string);
/// - for outgoing requests: `$new-fields`, `$new-request`, `$set-scheme`, `$set-authority`,
///   `$set-path`, `$outgoing` (the outgoing handler's `handle`), `$get`, `$subscribe`,
///   `$block`, `$drop-pollable`, `$status`.
///
/// Memory below 1024 holds results; data goes from 1100 on.
fn proxy(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component {IO_IMPORTS}
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type $p (sub resource)))
    (type $borrow-p (borrow $p))
    (export "[method]pollable.block" (func (param "self" $borrow-p)))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:http/types@0.2.0" (instance $types
    (alias outer 1 $output-stream (type $os0))
    (export "output-stream" (type $os (eq $os0)))
    (alias outer 1 $pollable (type $p0))
    (export "pollable" (type $p (eq $p0)))
    {HTTP_ERROR_CODE}
    (type $sch (variant (case "HTTP") (case "HTTPS") (case "other" string)))
    (export "scheme" (type $scheme (eq $sch)))
    (export "fields" (type $fields (sub resource)))
    (export "incoming-request" (type $req (sub resource)))
    (export "outgoing-request" (type $oreq (sub resource)))
    (export "request-options" (type $opts (sub resource)))
    (export "incoming-response" (type $iresp (sub resource)))
    (export "outgoing-response" (type $resp (sub resource)))
    (export "outgoing-body" (type $body (sub resource)))
    (export "response-outparam" (type $out (sub resource)))
    (export "future-incoming-response" (type $fut (sub resource)))
    (type $own-fields (own $fields))
    (type $own-oreq (own $oreq))
    (type $own-iresp (own $iresp))
    (type $own-resp (own $resp))
    (type $own-body (own $body))
    (type $own-os (own $os))
    (type $own-out (own $out))
    (type $own-p (own $p))
    (type $borrow-req (borrow $req))
    (type $borrow-oreq (borrow $oreq))
    (type $borrow-iresp (borrow $iresp))
    (type $borrow-resp (borrow $resp))
    (type $borrow-body (borrow $body))
    (type $borrow-fut (borrow $fut))
    (export "[constructor]fields" (func (result $own-fields)))
    (export "[method]incoming-request.path-with-query" (func (param "self" $borrow-req) (result (option string))))
    (export "[constructor]outgoing-request" (func (param "headers" $own-fields) (result $own-oreq)))
    (export "[method]outgoing-request.set-scheme" (func (param "self" $borrow-oreq) (param "scheme" (option $scheme)) (result (result))))
    (export "[method]outgoing-request.set-authority" (func (param "self" $borrow-oreq) (param "authority" (option string)) (result (result))))
    (export "[method]outgoing-request.set-path-with-query" (func (param "self" $borrow-oreq) (param "path-with-query" (option string)) (result (result))))
    (export "[method]incoming-response.status" (func (param "self" $borrow-iresp) (result u16)))
    (export "[method]future-incoming-response.subscribe" (func (param "self" $borrow-fut) (result $own-p)))
    (export "[method]future-incoming-response.get"
      (func (param "self" $borrow-fut) (result (option (result (result $own-iresp (error $error-code)))))))
    (export "[constructor]outgoing-response" (func (param "headers" $own-fields) (result $own-resp)))
    (export "[method]outgoing-response.body" (func (param "self" $borrow-resp) (result (result $own-body))))
    (export "[method]outgoing-body.write" (func (param "self" $borrow-body) (result (result $own-os))))
    (export "[static]outgoing-body.finish"
      (func (param "this" $own-body) (param "trailers" (option $own-fields)) (result (result (error $error-code)))))
    (export "[static]response-outparam.set"
      (func (param "param" $own-out) (param "response" (result $own-resp (error $error-code)))))))
  (alias export $types "incoming-request" (type $incoming-request))
  (alias export $types "response-outparam" (type $response-outparam))
  (alias export $types "outgoing-request" (type $outgoing-request))
  (alias export $types "request-options" (type $request-options))
  (alias export $types "future-incoming-response" (type $future-incoming-response))
  (alias export $types "error-code" (type $http-error-code))
  (import "wasi:http/outgoing-handler@0.2.0" (instance $outgoing
    (alias outer 1 $outgoing-request (type $r0))
    (export "outgoing-request" (type $r (eq $r0)))
    (alias outer 1 $request-options (type $o0))
    (export "request-options" (type $o (eq $o0)))
    (alias outer 1 $future-incoming-response (type $f0))
    (export "future-incoming-response" (type $f (eq $f0)))
    (alias outer 1 $http-error-code (type $e0))
    (export "error-code" (type $e (eq $e0)))
    (type $own-r (own $r))
    (type $own-o (own $o))
    (type $own-f (own $f))
    (export "handle" (func (param "request" $own-r) (param "options" (option $own-o)) (result (result $own-f (error $e)))))))
  (core func $drop-os (canon resource.drop $output-stream))
  (core func $drop-pollable (canon resource.drop $pollable))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $new-fields (canon lower (func $types "[constructor]fields")))
  (core func $path (canon lower (func $types "[method]incoming-request.path-with-query") (memory $memory) (realloc $realloc)))
  (core func $new-request (canon lower (func $types "[constructor]outgoing-request")))
  (core func $set-scheme (canon lower (func $types "[method]outgoing-request.set-scheme") (memory $memory)))
  (core func $set-authority (canon lower (func $types "[method]outgoing-request.set-authority") (memory $memory)))
  (core func $set-path (canon lower (func $types "[method]outgoing-request.set-path-with-query") (memory $memory)))
  (core func $status (canon lower (func $types "[method]incoming-response.status")))
  (core func $subscribe (canon lower (func $types "[method]future-incoming-response.subscribe")))
  (core func $get (canon lower (func $types "[method]future-incoming-response.get") (memory $memory) (realloc $realloc)))
  (core func $outgoing (canon lower (func $outgoing "handle") (memory $memory) (realloc $realloc)))
  (core func $new-response (canon lower (func $types "[constructor]outgoing-response")))
  (core func $response-body (canon lower (func $types "[method]outgoing-response.body") (memory $memory)))
  (core func $body-write (canon lower (func $types "[method]outgoing-body.write") (memory $memory)))
  (core func $body-finish (canon lower (func $types "[static]outgoing-body.finish") (memory $memory) (realloc $realloc)))
  (core func $set (canon lower (func $types "[static]response-outparam.set") (memory $memory)))
  (core module $main
    (import "host" "memory" (memory 1))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "drop-os" (func $drop-os (param i32)))
    (import "host" "drop-pollable" (func $drop-pollable (param i32)))
    (import "host" "block" (func $block (param i32)))
    (import "host" "new-fields" (func $new-fields (result i32)))
    (import "host" "path" (func $path (param i32 i32)))
    (import "host" "new-request" (func $new-request (param i32) (result i32)))
    (import "host" "set-scheme" (func $set-scheme (param i32 i32 i32 i32 i32) (result i32)))
    (import "host" "set-authority" (func $set-authority (param i32 i32 i32 i32) (result i32)))
    (import "host" "set-path" (func $set-path (param i32 i32 i32 i32) (result i32)))
    (import "host" "status" (func $status (param i32) (result i32)))
    (import "host" "subscribe" (func $subscribe (param i32) (result i32)))
    (import "host" "get" (func $get (param i32 i32)))
    (import "host" "outgoing" (func $outgoing (param i32 i32 i32 i32)))
    (import "host" "new-response" (func $new-response (param i32) (result i32)))
    (import "host" "response-body" (func $response-body (param i32 i32)))
    (import "host" "body-write" (func $body-write (param i32 i32)))
    (import "host" "body-finish" (func $body-finish (param i32 i32 i32 i32)))
    (import "host" "set" (func $set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
    (global $body (mut i32) (i32.const 0))
    (data (i32.const 1020) "\0a")
    ;; sets the response (200, no headers) and returns its body's stream
    (func $respond (param $out i32) (result i32) (local $resp i32)
      (local.set $resp (call $new-response (call $new-fields)))
      (call $response-body (local.get $resp) (i32.const 300))
      (if (i32.load8_u (i32.const 300)) (then unreachable))
      (global.set $body (i32.load (i32.const 304)))
      ;; set(param, ok(response)): the result flattened, ok's handle in its first slot
      (call $set (local.get $out) (i32.const 0) (local.get $resp)
        (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
      (call $body-write (global.get $body) (i32.const 300))
      (if (i32.load8_u (i32.const 300)) (then unreachable))
      (i32.load (i32.const 304)))
    ;; ends the body with a newline, closes its stream and finishes it
    (func $end (param $stream i32)
      (call $write (local.get $stream) (i32.const 1020) (i32.const 1) (i32.const 16))
      (call $drop-os (local.get $stream))
      (call $body-finish (global.get $body) (i32.const 0) (i32.const 0) (i32.const 320)))
    {body})
  (core instance $main-inst (instantiate $main
    (with "host" (instance
      (export "memory" (memory $memory))
      (export "write" (func $write))
      (export "drop-os" (func $drop-os))
      (export "drop-pollable" (func $drop-pollable))
      (export "block" (func $block))
      (export "new-fields" (func $new-fields))
      (export "path" (func $path))
      (export "new-request" (func $new-request))
      (export "set-scheme" (func $set-scheme))
      (export "set-authority" (func $set-authority))
      (export "set-path" (func $set-path))
      (export "status" (func $status))
      (export "subscribe" (func $subscribe))
      (export "get" (func $get))
      (export "outgoing" (func $outgoing))
      (export "new-response" (func $new-response))
      (export "response-body" (func $response-body))
      (export "body-write" (func $body-write))
      (export "body-finish" (func $body-finish))
      (export "set" (func $set))))))
  (type $own-req (own $incoming-request))
  (type $own-out (own $response-outparam))
  (func $handle (param "request" $own-req) (param "response-out" $own-out)
    (canon lift (core func $main-inst "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#
    ))
    .expect("valid component WAT")
}
