// Package heldport holds a loopback TCP port for a server that a test, a
// benchmark or the demo starts later, in this process or in a child.
//
// "Pick a free port, close it, and let the server bind it later" is a race:
// in between, any listener on the machine may be given the same port by the
// kernel, and the test then talks to a stranger (issue 23: a stand-in Ollama
// that never started, and a gate that found its port answering). A held port
// closes that window. It is a socket bound to the address with SO_REUSEADDR
// and never listening, so, until Close:
//   - connections to it are refused, as to a server that is down;
//   - the kernel gives it to no one else: neither to a bind to port 0 nor to
//     an outgoing connection;
//   - a bind without SO_REUSEADDR fails;
//   - a listener that asks for exactly this address with SO_REUSEADDR (every
//     Go server does: net.Listen sets it) binds it, serves, and may stop and
//     bind again, any number of times, in this process or another.
//
// So hold the port, hand its address to the server, and close the hold when
// the server is gone for good (or never: holds die with the process).
package heldport

import (
	"fmt"
	"net"
	"strconv"
)

// Port is a held loopback TCP port.
type Port struct {
	host string
	port int
	fd   int
}

// Hold holds port on the IPv4 address host; port 0 lets the kernel choose
// one. An error means the address is not an IPv4 address or the port is not
// free for a listener there.
func Hold(host string, port int) (*Port, error) {
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return nil, fmt.Errorf("holding a port on %q: want an IPv4 address", host)
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("holding port %d on %s: want 0 to 65535", port, host)
	}
	fd, got, err := hold([4]byte(ip), port)
	if err != nil {
		return nil, fmt.Errorf("holding %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	return &Port{host: host, port: got, fd: fd}, nil
}

// Addr is host:port, for the server's listen flag or net.Listen.
func (p *Port) Addr() string { return net.JoinHostPort(p.host, strconv.Itoa(p.port)) }

// Port is the port number.
func (p *Port) Port() int { return p.port }
