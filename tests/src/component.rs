//! WASI preview 2 components for the wasm tier's tests, written by hand in the component
//! model's text format (no wasm32 target is installed here to build them from Rust). Each
//! imports only the functions it calls, at version 0.2.0 of their interfaces; wasmtime links a
//! 0.2.x host to them.
//!
//! - [`printing`]: prints a text through `wasi:cli/stdout`.
//! - [`tcp_client`]: resolves a name (or takes an address), connects over TCP, sends a
//!   message, and prints what happened (`sent`, or the step that failed and its
//!   `wasi:sockets` error code, e.g. `connect: access-denied`).

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
  (core module $mem (memory (export "memory") 1))
  (core instance $mem-inst (instantiate $mem))
  (alias core export $mem-inst "memory" (core memory $memory))
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
