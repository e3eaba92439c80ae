//go:build !linux

package heldport

import (
	"net"
	"strconv"
)

// hold outside Linux only chooses a port: other systems' SO_REUSEADDR does
// not let a second socket bind the same address, so nothing is held and the
// old race remains. The suites that depend on it run on Linux.
func hold(ip [4]byte, port int) (fd, bound int, err error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(net.IP(ip[:]).String(), strconv.Itoa(port)))
	if err != nil {
		return -1, 0, err
	}
	defer ln.Close()
	return -1, ln.Addr().(*net.TCPAddr).Port, nil
}

// Close does nothing: nothing is held outside Linux.
func (p *Port) Close() error { return nil }
