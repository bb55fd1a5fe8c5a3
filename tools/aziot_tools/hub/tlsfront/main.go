// tlsfront: the TLS side of the emulator's "standard" hub mode.
//
// A standard IoT Hub (no preview features) presents only its RSA chain,
// answers an ECDSA-only ClientHello with a handshake failure, never echoes
// the TLS Maximum Fragment Length extension and sends records of up to
// 16 KB ("Transport Layer Security (TLS) support in IoT Hub",
// learn.microsoft.com/azure/iot-hub/iot-hub-tls-support: the ECC server
// certificate and MFL are preview features). OpenSSL servers always honour
// MFL and cannot be told not to; Go's crypto/tls does not implement the
// extension (RFC 6066 section 4) at all, so it ignores it as the hub does.
//
// For each connection this process completes the handshake, then dials the
// emulator's plaintext back end and sends one JSON line with what was
// negotiated (and the client's certificates, which the emulator judges at
// CONNECT as the hub does), followed by the decrypted stream both ways.
// A failed handshake is reported the same way, then the link is closed.
//
// Usage: tlsfront -listen 127.0.0.1:0 -backend 127.0.0.1:PORT -chain rsa-chain.pem -key rsa-key.pem
// The first line on stdin is a secret that every report carries, so that the
// back end (a loopback port any local process could reach) serves only this
// front; the process exits when stdin closes. Prints "listening HOST:PORT" on
// stdout once it accepts connections.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// counted counts the TLS bytes of one connection, handshake included.
type counted struct {
	net.Conn
	mu      sync.Mutex
	in, out int
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in += n
	c.mu.Unlock()
	return n, err
}

func (c *counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out += n
	c.mu.Unlock()
	return n, err
}

func (c *counted) totals() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.in, c.out
}

type report struct {
	Token     string   `json:"token"`
	Peer      string   `json:"peer"`
	OK        bool     `json:"ok"`
	Reason    string   `json:"reason,omitempty"`
	Version   string   `json:"version,omitempty"`
	Cipher    uint16   `json:"cipher,omitempty"`
	PeerChain []string `json:"peer_chain,omitempty"`
	HsIn      int      `json:"handshake_bytes_in"`
	HsOut     int      `json:"handshake_bytes_out"`
	HsMs      float64  `json:"handshake_ms"`
}

// The hub's four ECDHE-RSA suites; Go implements three of them (it has no
// AES-256-CBC-SHA384), so this front is one suite stricter than the hub.
var rsaSuites = []uint16{
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept devices on")
	backend := flag.String("backend", "", "the emulator's plaintext back end, host:port")
	chain := flag.String("chain", "", "server certificate chain, PEM")
	key := flag.String("key", "", "server private key, PEM")
	timeout := flag.Duration("handshake-timeout", 10*time.Second, "handshake deadline")
	flag.Parse()
	cert, err := tls.LoadX509KeyPair(*chain, *key)
	if err != nil {
		log.Fatalf("tlsfront: %v", err)
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: rsaSuites,
		// The hub asks for a client certificate in the first handshake and
		// judges it at CONNECT (thumbprint or CA), so any is accepted here.
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true,
		// Full 16 KB records from the first byte, as a hub that ignores MFL may send.
		DynamicRecordSizingDisabled: true,
	}
	stdin := bufio.NewReader(os.Stdin)
	token, err := stdin.ReadString('\n')
	if err != nil {
		log.Fatalf("tlsfront: no secret on stdin: %v", err)
	}
	token = strings.TrimSpace(token)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("tlsfront: %v", err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	// The emulator closes stdin to stop this process.
	go func() {
		io.Copy(io.Discard, stdin)
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatalf("tlsfront: %v", err)
		}
		go serve(conn, config, *backend, *timeout, token)
	}
}

func serve(raw net.Conn, config *tls.Config, backend string, timeout time.Duration, token string) {
	defer raw.Close()
	if tcp, ok := raw.(*net.TCPConn); ok {
		tcp.SetNoDelay(true)
	}
	wire := &counted{Conn: raw}
	conn := tls.Server(wire, config)
	rep := report{Token: token, Peer: raw.RemoteAddr().String()}
	started := time.Now()
	raw.SetDeadline(started.Add(timeout))
	err := conn.Handshake()
	rep.HsMs = float64(time.Since(started).Microseconds()) / 1000
	rep.HsIn, rep.HsOut = wire.totals()
	if err != nil {
		rep.Reason = err.Error()
	} else {
		raw.SetDeadline(time.Time{})
		state := conn.ConnectionState()
		rep.OK = true
		rep.Version = "TLSv1.2"
		rep.Cipher = state.CipherSuite
		for _, c := range state.PeerCertificates {
			rep.PeerChain = append(rep.PeerChain, base64.StdEncoding.EncodeToString(c.Raw))
		}
	}
	back, berr := net.Dial("tcp", backend)
	if berr != nil {
		log.Printf("tlsfront: back end: %v", berr)
		return
	}
	defer back.Close()
	line, _ := json.Marshal(rep)
	if _, err := back.Write(append(line, '\n')); err != nil || !rep.OK {
		return
	}
	done := make(chan struct{}, 2)
	go func() { // device -> emulator
		io.Copy(back, conn)
		if tcp, ok := back.(*net.TCPConn); ok {
			tcp.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() { // emulator -> device, in records of up to 16 KB
		io.CopyBuffer(conn, back, make([]byte, 65536))
		conn.CloseWrite() // close_notify
		done <- struct{}{}
	}()
	<-done
	// Whichever side ended first, end the other: the hub closes the TCP link.
	raw.Close()
	back.Close()
	<-done
}
