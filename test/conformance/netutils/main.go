// Command netutils stands in for dig, getent and netcat in the images the
// conformance run makes from busybox, which lacks the first two and whose
// nc has none of the options the suite uses: its DNS tests query with
// `dig +notcp|+tcp +noall +answer +search NAME TYPE` and `dig +short NAME
// TYPE` and look names up with `getent hosts NAME`; its Service tests send
// with `echo hostName | nc -v -t|-u -w 2 HOST PORT` and want the answer.
// It is the command it is called as (dig by default). Only what the suite
// asks for is done, with the pod's /etc/resolv.conf as dig and libc read
// it; nc with any other options is busybox's.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if filepath.Base(os.Args[0]) == "nc" {
		os.Exit(nc(os.Args[1:]))
	}
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if filepath.Base(os.Args[0]) == "getent" {
		os.Exit(getent(conf, os.Args[1:]))
	}
	os.Exit(dig(conf, os.Args[1:]))
}

// dig answers a query as dig prints it: the answer's records, or with
// +short their data alone.
func dig(conf *dns.ClientConfig, args []string) int {
	network, short, search := "udp", false, false
	var name string
	qtype := dns.TypeA
	for _, a := range args {
		switch {
		case a == "+tcp":
			network = "tcp"
		case a == "+notcp":
			network = "udp"
		case a == "+short":
			short = true
		case a == "+search":
			search = true
		case strings.HasPrefix(a, "+"):
		case name == "":
			name = a
		default:
			t, ok := dns.StringToType[strings.ToUpper(a)]
			if !ok {
				fmt.Fprintf(os.Stderr, "dig: unknown type %s\n", a)
				return 1
			}
			qtype = t
		}
	}
	if name == "" {
		fmt.Fprintln(os.Stderr, "dig: no name")
		return 1
	}
	names := []string{dns.Fqdn(name)}
	if search {
		names = conf.NameList(name)
	}
	for _, n := range names {
		reply, err := exchange(conf, network, n, qtype)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dig: %v\n", err)
			return 9
		}
		if reply.Rcode == dns.RcodeNameError && len(names) > 1 {
			continue
		}
		for _, rr := range reply.Answer {
			if short {
				fields := strings.SplitN(rr.String(), "\t", 5)
				fmt.Println(fields[len(fields)-1])
			} else {
				fmt.Println(rr.String())
			}
		}
		return 0
	}
	return 0
}

// getent hosts prints the address of a name from /etc/hosts, else from
// DNS, as libc's getent does; 2 when there is none.
func getent(conf *dns.ClientConfig, args []string) int {
	if len(args) != 2 || args[0] != "hosts" {
		fmt.Fprintln(os.Stderr, "getent: only `getent hosts NAME`")
		return 1
	}
	name := args[1]
	if f, err := os.Open("/etc/hosts"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
			for _, h := range fields[min(1, len(fields)):] {
				if h == name {
					fmt.Println(strings.Join(fields, " "))
					return 0
				}
			}
		}
	}
	for _, n := range conf.NameList(name) {
		reply, err := exchange(conf, "udp", n, dns.TypeA)
		if err != nil {
			continue
		}
		for _, rr := range reply.Answer {
			if a, ok := rr.(*dns.A); ok {
				fmt.Printf("%s %s\n", a.A, name)
				return 0
			}
		}
	}
	return 2
}

// exchange asks the resolv.conf's name servers in turn.
func exchange(conf *dns.ClientConfig, network, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	var last error
	for _, s := range conf.Servers {
		reply, _, err := c.Exchange(m, net.JoinHostPort(s, conf.Port))
		if err == nil {
			return reply, nil
		}
		last = err
	}
	return nil, last
}

// nc connects to HOST PORT (-t, the default, or -u), sends its standard
// input and prints what comes back within -w seconds; -v says so on
// standard error, and only then is anything written there (the suite
// takes any as a failure). With options it does not know it runs
// busybox's nc.
func nc(args []string) int {
	network, wait, verbose := "tcp", 2*time.Second, false
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-v":
			verbose = true
		case a == "-t":
			network = "tcp"
		case a == "-u":
			network = "udp"
		case a == "-w" && i+1 < len(args):
			i++
			n, err := strconv.Atoi(args[i])
			if err != nil {
				return busyboxNC(args)
			}
			wait = time.Duration(n) * time.Second
		case strings.HasPrefix(a, "-"):
			return busyboxNC(args)
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) != 2 {
		return busyboxNC(args)
	}
	addr := net.JoinHostPort(rest[0], rest[1])
	conn, err := net.DialTimeout(network, addr, wait)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nc: connect to %s failed: %v\n", addr, err)
		return 1
	}
	defer conn.Close()
	if verbose {
		fmt.Fprintf(os.Stderr, "Connection to %s %s port [%s] succeeded!\n", rest[0], rest[1], network)
	}
	in, _ := io.ReadAll(os.Stdin)
	if _, err := conn.Write(in); err != nil {
		fmt.Fprintf(os.Stderr, "nc: %v\n", err)
		return 1
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.CloseWrite()
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	io.Copy(os.Stdout, conn)
	return 0
}

// busyboxNC runs busybox's nc with args.
func busyboxNC(args []string) int {
	err := syscall.Exec("/bin/busybox", append([]string{"nc"}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "nc: %v\n", err)
	return 1
}
