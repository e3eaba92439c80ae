package heldport

import (
	"fmt"
	"syscall"
)

// hold binds a TCP socket to ip:port with SO_REUSEADDR and does not listen.
// Linux lets a second SO_REUSEADDR socket bind and listen on the same
// address while no socket there listens, and keeps the port out of its
// choice of ports for port 0 and outgoing connections while any socket is
// bound to it.
func hold(ip [4]byte, port int) (fd, bound int, err error) {
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	if err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip, Port: port})
	}
	var sa syscall.Sockaddr
	if err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
}

// Close lets the port go: the kernel may give it to anyone again.
func (p *Port) Close() error {
	if p.fd < 0 {
		return nil
	}
	err := syscall.Close(p.fd)
	p.fd = -1
	return err
}
