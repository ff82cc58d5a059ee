package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/source"
)

// maxRecipients bounds an smtp receiver's To (the API says so too).
const maxRecipients = 20

// mailTarget checks an smtp receiver: its URL (smtp://host:port with
// STARTTLS, or smtps://host:port), its addresses and its CA.
func mailTarget(recv Receiver) (u *url.URL, from *mail.Address, to []string, tlsConfig *tls.Config, err error) {
	u, err = url.Parse(recv.URL)
	if err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Hostname() == "" || u.Port() == "" || u.User != nil {
		return nil, nil, nil, nil, fmt.Errorf("smtp receiver URL %s: want smtp://host:port (STARTTLS) or smtps://host:port, credentials in the Secret", redact.URL(recv.URL))
	}
	if from, err = mail.ParseAddress(recv.From); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("email.from %q: %w", recv.From, err)
	}
	if len(recv.To) == 0 || len(recv.To) > maxRecipients {
		return nil, nil, nil, nil, fmt.Errorf("email.to: want 1 to %d addresses, have %d", maxRecipients, len(recv.To))
	}
	for _, raw := range recv.To {
		a, err := mail.ParseAddress(raw)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("email.to %q: %w", raw, err)
		}
		to = append(to, a.Address)
	}
	tlsConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if len(recv.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(recv.CA) {
			return nil, nil, nil, nil, errors.New(`the Secret's "ca.crt" holds no PEM certificate`)
		}
		tlsConfig.RootCAs = pool
	}
	return u, from, to, tlsConfig, nil
}

// mail sends ev as an email: over TLS always (STARTTLS is required of an
// smtp:// server), signed in with the Secret's username and password
// when it has them, through the egress policy like every request.
func (n *Notifier) mail(ctx context.Context, recv Receiver, ev Event) error {
	u, from, to, tlsConfig, err := mailTarget(recv)
	if err != nil {
		return &permanentError{err}
	}
	if !source.HostAllowed(n.AllowedHosts, u.Host) {
		return &permanentError{fmt.Errorf("host %s is not among the allowed notification hosts", u.Host)}
	}
	text, err := message(recv, ev, summary(ev))
	if err != nil {
		return &permanentError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := n.dial(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if u.Scheme == "smtps" {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, u.Hostname())
	if err != nil {
		return err
	}
	defer c.Close()
	if u.Scheme == "smtp" {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return &permanentError{fmt.Errorf("%s does not offer STARTTLS: converge sends mail over TLS only", u.Host)}
		}
		if err := c.StartTLS(tlsConfig); err != nil {
			return err
		}
	}
	if recv.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", recv.Username, recv.Password, u.Hostname())); err != nil {
			return &permanentError{fmt.Errorf("%s refused the sign-in: %s", u.Host, redact.Error(err))}
		}
	}
	if err := c.Mail(from.Address); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return &permanentError{fmt.Errorf("%s refused the recipient %s: %w", u.Host, rcpt, err)}
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(emailMessage(from, to, ev, text)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// emailMessage is the message: plain text, its subject the event's
// summary line (Q-encoded when it is not ASCII), lines ending in CRLF.
func emailMessage(from *mail.Address, to []string, ev Event, text string) []byte {
	subject := fmt.Sprintf("converge: %s/%s %s", ev.Namespace, ev.Name, ev.Type)
	if ev.Revision != "" {
		subject += " at " + source.ShortRevision(ev.Revision)
	}
	var b bytes.Buffer
	header := func(k, v string) {
		// No header may carry a line break of its own.
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	header("From", from.String())
	header("To", strings.Join(to, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	when := ev.Time
	if when.IsZero() {
		when = time.Now()
	}
	header("Date", when.UTC().Format(time.RFC1123Z))
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "8bit")
	header("X-Converge-Event", ev.Type)
	b.WriteString("\r\n")
	body := strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n")
	b.WriteString(body)
	b.WriteString("\r\n")
	return b.Bytes()
}
