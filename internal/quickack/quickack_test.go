package quickack

import (
	"io"
	"net"
	"testing"
)

// Reads re-arm TCP_QUICKACK only while armed, and only on a TCP socket.
func TestArm(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("abc"))
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q := New(nc)
	buf := make([]byte, 1)
	read := func() {
		t.Helper()
		if _, err := io.ReadFull(q, buf); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if q.Rearms() != 0 || q.Armed() {
		t.Fatalf("disarmed read: %d re-arms, armed %v", q.Rearms(), q.Armed())
	}
	q.Arm(true)
	read()
	read()
	want := int64(0)
	if Supported {
		want = 2
	}
	if q.Rearms() != want {
		t.Errorf("two armed reads: %d re-arms, want %d", q.Rearms(), want)
	}
	q.Arm(false)
	if _, err := io.ReadAll(q); err != nil {
		t.Fatal(err)
	}
	if q.Rearms() != want {
		t.Errorf("after disarming: %d re-arms, want %d", q.Rearms(), want)
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := New(a)
	p.Arm(true)
	go func() { _, _ = b.Write([]byte("x")) }()
	if _, err := io.ReadFull(p, buf); err != nil {
		t.Fatal(err)
	}
	if p.Rearms() != 0 {
		t.Errorf("net.Pipe: %d re-arms, want 0 (no socket)", p.Rearms())
	}
}
