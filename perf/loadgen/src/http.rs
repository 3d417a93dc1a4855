//! A minimal blocking HTTP/1.1 keep-alive client (one request at a time per connection), so a
//! load generator thread pays one connect per run, not one per request like
//! `svc_registry::http::client` (`Connection: close`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
    timeout: Duration,
    buf: Vec<u8>,
}

pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Conn {
    pub fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
            timeout: Duration::from_secs(30),
            buf: Vec::with_capacity(4096),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect(&self.addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        self.stream = Some(BufReader::with_capacity(64 * 1024, s));
        Ok(())
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> io::Result<Resp> {
        self.request("POST", path, Some(body))
    }

    /// Send one request and read its response. A reused connection that turns out closed by the
    /// server (idle timeout) is reopened once.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Resp> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(e) if reused => {
                self.stream = None;
                let _ = e;
                self.try_request(method, path, body)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn try_request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Resp> {
        self.send(method, path, body)?;
        self.recv()
    }

    /// Send a request without reading its response (then call [`Conn::recv`]). No retry.
    pub fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<()> {
        if self.stream.is_none() {
            self.connect()?;
        }
        self.buf.clear();
        let _ = write!(
            self.buf,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.addr
        );
        if let Some(b) = body {
            let _ = write!(
                self.buf,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        self.buf.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            self.buf.extend_from_slice(b);
        }
        let stream = self.stream.as_mut().expect("connected");
        if let Err(e) = stream.get_mut().write_all(&self.buf) {
            self.stream = None;
            return Err(e);
        }
        Ok(())
    }

    /// Read the response to the request sent last.
    pub fn recv(&mut self) -> io::Result<Resp> {
        let r = self.read_response();
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn read_response(&mut self) -> io::Result<Resp> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut len: Option<usize> = None;
        let mut close = false;
        loop {
            line.clear();
            if stream.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse().ok();
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0u8; len.unwrap_or(0)];
        stream.read_exact(&mut body)?;
        if close || len.is_none() && status != 204 && status != 304 {
            self.stream = None;
        }
        Ok(Resp { status, body })
    }
}
