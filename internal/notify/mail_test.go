package notify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/go-logr/logr"
)

// mailServer is go-smtp's server on loopback: STARTTLS with a certificate
// of its own (when tls), PLAIN sign-in as ada/pw, and the mail it got.
type mailServer struct {
	addr string
	ca   []byte

	mu   sync.Mutex
	got  []receivedMail
	auth bool
}

type receivedMail struct {
	from string
	to   []string
	data string
}

func startMailServer(t *testing.T, withTLS bool) *mailServer {
	t.Helper()
	ms := &mailServer{}
	srv := smtp.NewServer(ms)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	if withTLS {
		cert, ca := selfSigned(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		ms.ca = ca
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ms
}

func (ms *mailServer) mails() []receivedMail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]receivedMail(nil), ms.got...)
}

func (ms *mailServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{ms: ms}, nil }

type mailSession struct {
	ms     *mailServer
	signed bool
	cur    receivedMail
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "ada" || pass != "pw" {
			return errors.New("wrong password")
		}
		s.signed = true
		return nil
	}), nil
}
func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.signed {
		return errors.New("sign in first")
	}
	s.cur.from = from
	return nil
}
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = string(b)
	s.ms.mu.Lock()
	s.ms.got = append(s.ms.got, s.cur)
	s.ms.mu.Unlock()
	return nil
}
func (s *mailSession) Reset()        { s.cur = receivedMail{} }
func (s *mailSession) Logout() error { return nil }

// selfSigned is a certificate for 127.0.0.1 and its PEM, as its own CA.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestMail_SentOverStartTLSSignedInOnce(t *testing.T) {
	ms := startMailServer(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := New(ctx, logr.Discard(), nil)
	n.Backoff = 10 * time.Millisecond
	recv := Receiver{Type: "smtp", URL: "smtp://" + ms.addr, From: "converge <cd@example.com>", To: []string{"oncall@example.com", "Ada <ada@example.com>"},
		Username: "ada", Password: "pw", CA: ms.ca}
	ev := Event{Type: "SyncFailed", Namespace: "shop", Name: "web", Revision: sha, Message: "apply failed:\r\nBcc: everyone@example.com", Time: time.Now()}
	n.Send(recv, ev)
	deadline := time.Now().Add(10 * time.Second)
	for len(ms.mails()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mails := ms.mails()
	if len(mails) != 1 {
		t.Fatalf("%d mails delivered, want 1", len(mails))
	}
	m := mails[0]
	if m.from != "cd@example.com" || strings.Join(m.to, ",") != "oncall@example.com,ada@example.com" {
		t.Errorf("envelope from %q to %q", m.from, m.to)
	}
	head, body, _ := strings.Cut(m.data, "\r\n\r\n")
	for _, want := range []string{"Subject: converge: shop/web SyncFailed at 0123456", "To: oncall@example.com, ada@example.com", "X-Converge-Event: SyncFailed"} {
		if !strings.Contains(head, want) {
			t.Errorf("the headers lack %q:\n%s", want, head)
		}
	}
	if strings.Contains(head, "Bcc") || !strings.Contains(body, "apply failed:") {
		t.Errorf("the message's text reached its headers, or not its body:\n%s", m.data)
	}

	// A wrong password, an unknown CA: nothing is sent, and the error
	// says why without the password.
	for _, bad := range []Receiver{
		{Type: "smtp", URL: "smtp://" + ms.addr, From: "cd@example.com", To: []string{"a@example.com"}, Username: "ada", Password: "wrong-pw", CA: ms.ca},
		{Type: "smtp", URL: "smtp://" + ms.addr, From: "cd@example.com", To: []string{"a@example.com"}, Username: "ada", Password: "pw"},
	} {
		err := n.post(ctx, bad, ev)
		if err == nil || strings.Contains(err.Error(), bad.Password) {
			t.Errorf("password %s, CA %t: %v", bad.Password, bad.CA != nil, err)
		}
	}
	if len(ms.mails()) != 1 {
		t.Errorf("%d mails after the refused ones, want 1", len(ms.mails()))
	}
}

func TestMail_RefusesAServerWithoutTLS(t *testing.T) {
	ms := startMailServer(t, false)
	n := New(context.Background(), logr.Discard(), nil)
	err := n.post(context.Background(), Receiver{Type: "smtp", URL: "smtp://" + ms.addr, From: "cd@example.com", To: []string{"a@example.com"},
		Username: "ada", Password: "pw"}, Event{Type: "SyncSucceeded"})
	var perm *permanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("a server without STARTTLS: %v, want a permanent error naming STARTTLS", err)
	}
	if len(ms.mails()) != 0 {
		t.Error("mail was sent in the clear")
	}
}

func TestMailTarget_NamesWhatIsWrong(t *testing.T) {
	to := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "a@example.com"
		}
		return out
	}
	for _, tc := range []struct {
		recv Receiver
		want string
	}{
		{Receiver{URL: "https://mail.example.com", From: "a@example.com", To: to(1)}, "smtp://host:port"},
		{Receiver{URL: "smtp://mail.example.com", From: "a@example.com", To: to(1)}, "smtp://host:port"},
		{Receiver{URL: "smtp://ada:pw@mail.example.com:587", From: "a@example.com", To: to(1)}, "credentials in the Secret"},
		{Receiver{URL: "smtp://mail.example.com:587", From: "not an address", To: to(1)}, "email.from"},
		{Receiver{URL: "smtp://mail.example.com:587", From: "a@example.com", To: to(21)}, "want 1 to 20"},
		{Receiver{URL: "smtp://mail.example.com:587", From: "a@example.com", To: []string{"x\r\nBcc: b@example.com"}}, "email.to"},
		{Receiver{URL: "smtps://mail.example.com:465", From: "a@example.com", To: to(1), CA: []byte("junk")}, "ca.crt"},
	} {
		if _, _, _, _, err := mailTarget(tc.recv); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), ":pw@") {
			t.Errorf("%s: %v, want an error naming %s", tc.recv.URL, err, tc.want)
		}
	}
}
