//! A small HTTP/1.1 client for the tests and the benchmark of served `wasi:http/proxy`
//! components: keep-alive GETs over one connection, bodies read by `content-length`, chunked
//! encoding or the connection's end; and [`load`], which sends N requests from C concurrent
//! clients and measures them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s),
            addr,
        })
    }

    /// GET `path`; a connection the server closed is made again once.
    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        match self.try_get(path) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                *self = Client::connect(self.addr)?;
                self.try_get(path)
            }
            r => r,
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<Response> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "connection" => close = v.to_ascii_lowercase().contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| bad(format!("chunk size {line:?}")))?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
            close = true;
        }
        if close {
            *self = Client::connect(self.addr)?;
        }
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Waits until `addr` accepts a connection.
pub fn wait_for(addr: SocketAddr, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// What [`load`] measured.
#[derive(Debug, Clone)]
pub struct Load {
    pub requests: usize,
    /// Responses with status 200 and the body `expect` gave.
    pub right: usize,
    /// The first wrong response or error, if any.
    pub first_wrong: Option<String>,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `requests` GETs of `/c{client}/r{n}`, spread over `clients` keep-alive connections at
/// once; each body is checked against `expect(path)`.
pub fn load(addr: SocketAddr, clients: usize, requests: usize, expect: fn(&str) -> String) -> Load {
    let start = Instant::now();
    let per = |c: usize| requests / clients + usize::from(c < requests % clients);
    let results: Vec<(Vec<Duration>, usize, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut times = Vec::new();
                    let (mut right, mut wrong) = (0, None);
                    let mut client = match Client::connect(addr) {
                        Ok(cl) => cl,
                        Err(e) => return (times, 0, Some(format!("connect: {e}"))),
                    };
                    for n in 0..per(c) {
                        let path = format!("/c{c}/r{n}");
                        let t = Instant::now();
                        match client.get(&path) {
                            Ok(r) if r.status == 200 && r.body == expect(&path) => right += 1,
                            Ok(r) => {
                                wrong.get_or_insert(format!("{path}: {r:?}"));
                            }
                            Err(e) => {
                                wrong.get_or_insert(format!("{path}: {e}"));
                            }
                        }
                        times.push(t.elapsed());
                    }
                    (times, right, wrong)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut times: Vec<Duration> = results.iter().flat_map(|r| r.0.clone()).collect();
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Load {
        requests: times.len(),
        right: results.iter().map(|r| r.1).sum(),
        first_wrong: results.iter().find_map(|r| r.2.clone()),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}
