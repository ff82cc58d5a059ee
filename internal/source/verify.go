package source

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/ssh"
)

// Verification modes.
const (
	// VerifyHead checks the signature of the commit itself.
	VerifyHead = "head"
	// VerifyTag checks the signature of the annotated tag that selected
	// the commit.
	VerifyTag = "tag"
)

// Verify asks Fetch to check a revision's signature before anything is
// extracted from it.
type Verify struct {
	Mode  string
	Trust *TrustedKeys
}

// Signer is who signed a verified revision.
type Signer struct {
	// Type is "openpgp" or "ssh".
	Type string `json:"type"`
	// Fingerprint is the OpenPGP fingerprint of the primary key (hex), or
	// the SSH key's SHA256 fingerprint.
	Fingerprint string `json:"fingerprint"`
	// Identity is the key's user id (OpenPGP) or principals (SSH).
	Identity string `json:"identity,omitempty"`
}

// VerificationError says why a revision is not trusted. Retrying does not
// help: the app must stay where it is until a trusted revision arrives.
type VerificationError struct {
	Revision string
	// Object is "commit" or "tag <name>".
	Object string
	Reason string
}

func (e *VerificationError) Error() string {
	return fmt.Sprintf("%s %s is not trusted: %s", e.Object, ShortRevision(e.Revision), e.Reason)
}

// ShortRevision is a revision as people read it: its first 12 characters
// (a commit's abbreviation, a digest's start). converge's one short form.
func ShortRevision(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// TrustedKeys are the keys a revision may be signed with.
type TrustedKeys struct {
	pgp     openpgp.EntityList
	signers []allowedSigner
	// ID identifies this set of keys (a hash of their source), for caching
	// verification results.
	ID string
}

// ParseTrustedKeys reads trusted keys from a Secret's data: every key
// named allowed_signers (or ending in .allowed_signers) is an SSH
// allowed-signers file; every key ending in .asc, .gpg or .pgp (or named
// "keys") holds OpenPGP public keys, armored or binary. Other keys are
// ignored.
func ParseTrustedKeys(data map[string][]byte) (*TrustedKeys, error) {
	t := &TrustedKeys{}
	names := make([]string, 0, len(data))
	for name := range data {
		names = append(names, name)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		v := data[name]
		switch {
		case name == "allowed_signers" || strings.HasSuffix(name, ".allowed_signers"):
			s, err := parseAllowedSigners(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			t.signers = append(t.signers, s...)
		case name == "keys" || strings.HasSuffix(name, ".asc") || strings.HasSuffix(name, ".gpg") || strings.HasSuffix(name, ".pgp"):
			var el openpgp.EntityList
			var err error
			if bytes.Contains(v, []byte("-----BEGIN PGP")) {
				el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(v))
			} else {
				el, err = openpgp.ReadKeyRing(bytes.NewReader(v))
			}
			if err != nil {
				return nil, fmt.Errorf("%s: not an OpenPGP public key: %w", name, err)
			}
			t.pgp = append(t.pgp, el...)
		default:
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(v))
		h.Write(v)
	}
	if len(t.pgp) == 0 && len(t.signers) == 0 {
		return nil, fmt.Errorf("no trusted keys: expected an allowed_signers entry (SSH) or entries ending in .asc or .gpg (OpenPGP)")
	}
	t.ID = hex.EncodeToString(h.Sum(nil))
	return t, nil
}

// VerifyCommit checks the signature of a raw commit object (as `git
// cat-file commit` prints it).
func (t *TrustedKeys) VerifyCommit(raw []byte) (*Signer, error) {
	payload, sig, err := splitCommitSignature(raw)
	if err != nil {
		return nil, err
	}
	return t.verify(payload, sig, committerTime(raw))
}

// VerifyTag checks the signature of a raw annotated tag object.
func (t *TrustedKeys) VerifyTag(raw []byte) (*Signer, error) {
	payload, sig, err := splitTagSignature(raw)
	if err != nil {
		return nil, err
	}
	return t.verify(payload, sig, taggerTime(raw))
}

func (t *TrustedKeys) verify(payload, sig []byte, at time.Time) (*Signer, error) {
	switch {
	case bytes.HasPrefix(sig, []byte("-----BEGIN PGP SIGNATURE-----")):
		return t.verifyPGP(payload, sig, at)
	case bytes.HasPrefix(sig, []byte("-----BEGIN SSH SIGNATURE-----")):
		return t.verifySSH(payload, sig, at)
	}
	return nil, fmt.Errorf("unsupported signature format (X.509/S/MIME signatures are not supported)")
}

func (t *TrustedKeys) verifyPGP(payload, sig []byte, at time.Time) (*Signer, error) {
	if len(t.pgp) == 0 {
		return nil, fmt.Errorf("signed with OpenPGP, but no OpenPGP key is trusted")
	}
	check := func(now time.Time) (*openpgp.Entity, error) {
		cfg := &packet.Config{Time: func() time.Time { return now }}
		return openpgp.CheckArmoredDetachedSignature(t.pgp, bytes.NewReader(payload), bytes.NewReader(sig), cfg)
	}
	signer, err := check(time.Now())
	if err != nil && !at.IsZero() && (errors.Is(err, pgperrors.ErrKeyExpired) || errors.Is(err, pgperrors.ErrSignatureExpired)) {
		// A key that expired since still vouches for what it signed while
		// valid: judge expiry as of the commit's time (plus a few minutes,
		// as the signature is made just after the commit header's time).
		// Revocation is never excused this way.
		if s, err2 := check(at.Add(5 * time.Minute)); err2 == nil {
			signer, err = s, nil
		}
	}
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return nil, fmt.Errorf("signed with an OpenPGP key that is not trusted%s", pgpIssuer(sig))
		}
		return nil, fmt.Errorf("bad OpenPGP signature: %v", err)
	}
	s := &Signer{Type: "openpgp", Fingerprint: strings.ToUpper(hex.EncodeToString(signer.PrimaryKey.Fingerprint))}
	if id := signer.PrimaryIdentity(); id != nil {
		s.Identity = id.Name
	}
	return s, nil
}

// pgpIssuer names the key that made a signature, for error messages.
func pgpIssuer(sig []byte) string {
	block, err := armor.Decode(bytes.NewReader(sig))
	if err != nil {
		return ""
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return ""
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		return ""
	}
	switch {
	case len(s.IssuerFingerprint) > 0:
		return " (key " + strings.ToUpper(hex.EncodeToString(s.IssuerFingerprint)) + ")"
	case s.IssuerKeyId != nil:
		return fmt.Sprintf(" (key id %016X)", *s.IssuerKeyId)
	}
	return ""
}

// The SSH signature format (OpenSSH PROTOCOL.sshsig): an armored blob of
// "SSHSIG", version, public key, namespace, reserved, hash algorithm and
// signature; the signed data is "SSHSIG", namespace, reserved, hash
// algorithm and the hash of the message. Git signs in namespace "git".
type sshSig struct {
	Magic     [6]byte
	Version   uint32
	PublicKey []byte
	Namespace string
	Reserved  string
	HashAlg   string
	Signature []byte
}

type sshSignedData struct {
	Magic     [6]byte
	Namespace string
	Reserved  string
	HashAlg   string
	Hash      []byte
}

func (t *TrustedKeys) verifySSH(payload, armored []byte, at time.Time) (*Signer, error) {
	if len(t.signers) == 0 {
		return nil, fmt.Errorf("signed with SSH, but no allowed_signers are trusted")
	}
	body := string(armored)
	body = strings.TrimPrefix(body, "-----BEGIN SSH SIGNATURE-----")
	body, _, ok := strings.Cut(body, "-----END SSH SIGNATURE-----")
	if !ok {
		return nil, fmt.Errorf("malformed SSH signature")
	}
	blob, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, fmt.Errorf("malformed SSH signature: %v", err)
	}
	var s sshSig
	if err := ssh.Unmarshal(blob, &s); err != nil || string(s.Magic[:]) != "SSHSIG" || s.Version != 1 {
		return nil, fmt.Errorf("malformed SSH signature")
	}
	if s.Namespace != "git" {
		return nil, fmt.Errorf("SSH signature is for namespace %q, not \"git\"", s.Namespace)
	}
	pub, err := ssh.ParsePublicKey(s.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("SSH signature: %v", err)
	}
	fp := ssh.FingerprintSHA256(pub)
	signer := t.allowedSSH(pub, at)
	if signer == nil {
		return nil, fmt.Errorf("signed with an SSH key that is not in allowed_signers (%s)", fp)
	}
	var digest []byte
	switch s.HashAlg {
	case "sha256":
		d := sha256.Sum256(payload)
		digest = d[:]
	case "sha512":
		d := sha512.Sum512(payload)
		digest = d[:]
	default:
		return nil, fmt.Errorf("SSH signature: unsupported hash %q", s.HashAlg)
	}
	signed := ssh.Marshal(sshSignedData{Magic: s.Magic, Namespace: s.Namespace, Reserved: s.Reserved, HashAlg: s.HashAlg, Hash: digest})
	var sig ssh.Signature
	if err := ssh.Unmarshal(s.Signature, &sig); err != nil {
		return nil, fmt.Errorf("malformed SSH signature")
	}
	if err := pub.Verify(signed, &sig); err != nil {
		return nil, fmt.Errorf("bad SSH signature by %s", fp)
	}
	return &Signer{Type: "ssh", Fingerprint: fp, Identity: strings.Join(signer.principals, ",")}, nil
}

// allowedSigner is one line of an allowed_signers file (ssh-keygen(1),
// ALLOWED SIGNERS).
type allowedSigner struct {
	principals  []string
	namespaces  []string
	validAfter  time.Time
	validBefore time.Time
	key         ssh.PublicKey
}

func (t *TrustedKeys) allowedSSH(pub ssh.PublicKey, at time.Time) *allowedSigner {
	want := pub.Marshal()
	for i := range t.signers {
		s := &t.signers[i]
		if !bytes.Equal(s.key.Marshal(), want) {
			continue
		}
		if len(s.namespaces) > 0 && !matchAny(s.namespaces, "git") {
			continue
		}
		if !at.IsZero() && ((!s.validAfter.IsZero() && at.Before(s.validAfter)) || (!s.validBefore.IsZero() && !at.Before(s.validBefore))) {
			continue
		}
		return s
	}
	return nil
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

func parseAllowedSigners(data []byte) ([]allowedSigner, error) {
	var out []allowedSigner
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := splitQuoted(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("line %d: want \"principals [options] keytype key\"", i+1)
		}
		s := allowedSigner{principals: strings.Split(strings.Trim(fields[0], `"`), ",")}
		rest := fields[1:]
		if !isKey(rest) {
			// Not "keytype base64" yet: the field is options.
			if err := s.parseOptions(rest[0]); err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			rest = rest[1:]
		}
		if !isKey(rest) {
			return nil, fmt.Errorf("line %d: no valid public key", i+1)
		}
		blob, _ := base64.StdEncoding.DecodeString(rest[1])
		key, _ := ssh.ParsePublicKey(blob)
		s.key = key
		out = append(out, s)
	}
	return out, nil
}

// isKey reports whether fields start with "keytype base64-key". (Not
// ssh.ParseAuthorizedKey: it would take allowed-signers options for
// authorized_keys options and drop them.)
func isKey(fields []string) bool {
	if len(fields) < 2 {
		return false
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return false
	}
	key, err := ssh.ParsePublicKey(blob)
	return err == nil && key.Type() == fields[0]
}

func (s *allowedSigner) parseOptions(opts string) error {
	for _, opt := range splitOptions(opts) {
		name, value, _ := strings.Cut(opt, "=")
		value = strings.Trim(value, `"`)
		switch strings.ToLower(name) {
		case "namespaces":
			s.namespaces = strings.Split(value, ",")
		case "valid-after":
			t, err := parseSSHTime(value)
			if err != nil {
				return err
			}
			s.validAfter = t
		case "valid-before":
			t, err := parseSSHTime(value)
			if err != nil {
				return err
			}
			s.validBefore = t
		case "cert-authority":
			return fmt.Errorf("cert-authority keys are not supported")
		default:
			return fmt.Errorf("unknown option %q", name)
		}
	}
	return nil
}

// parseSSHTime reads YYYYMMDD[HHMM[SS]][Z]: UTC with Z, else local time.
func parseSSHTime(v string) (time.Time, error) {
	loc := time.Local
	if strings.HasSuffix(v, "Z") {
		v, loc = strings.TrimSuffix(v, "Z"), time.UTC
	}
	for _, layout := range []string{"20060102150405", "200601021504", "20060102"} {
		if len(v) == len(layout) {
			return time.ParseInLocation(layout, v, loc)
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", v)
}

// splitQuoted splits on spaces outside double quotes.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\t') && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// splitOptions splits on commas outside double quotes.
func splitOptions(s string) []string {
	var out []string
	start, quoted := 0, false
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// splitCommitSignature separates a commit object into the signed payload
// (the object without its gpgsig header) and the signature.
func splitCommitSignature(raw []byte) (payload, sig []byte, err error) {
	header, body, _ := bytes.Cut(raw, []byte("\n\n"))
	var kept, signature bytes.Buffer
	inSig := false
	for _, line := range bytes.SplitAfter(header, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("gpgsig ")):
			inSig = true
			signature.Write(bytes.TrimPrefix(line, []byte("gpgsig ")))
		case inSig && bytes.HasPrefix(line, []byte(" ")):
			signature.Write(line[1:])
		default:
			inSig = false
			kept.Write(line)
		}
	}
	if signature.Len() == 0 {
		return nil, nil, fmt.Errorf("the commit is not signed")
	}
	if !bytes.HasSuffix(kept.Bytes(), []byte("\n")) {
		kept.WriteByte('\n')
	}
	kept.WriteByte('\n')
	kept.Write(body)
	sig = signature.Bytes()
	if !bytes.HasSuffix(sig, []byte("\n")) {
		sig = append(sig, '\n')
	}
	return kept.Bytes(), sig, nil
}

// splitTagSignature separates an annotated tag object into payload and the
// signature appended to its message.
func splitTagSignature(raw []byte) (payload, sig []byte, err error) {
	for _, marker := range []string{"-----BEGIN PGP SIGNATURE-----", "-----BEGIN SSH SIGNATURE-----"} {
		i := bytes.Index(raw, []byte("\n"+marker))
		if i >= 0 {
			return raw[:i+1], raw[i+1:], nil
		}
	}
	return nil, nil, fmt.Errorf("the tag is not signed")
}

func committerTime(raw []byte) time.Time { return headerTime(raw, "committer ") }
func taggerTime(raw []byte) time.Time    { return headerTime(raw, "tagger ") }

// headerTime reads the Unix time from a "committer Name <mail> 1700000000
// +0000" header.
func headerTime(raw []byte, prefix string) time.Time {
	header, _, _ := bytes.Cut(raw, []byte("\n\n"))
	for _, line := range strings.Split(string(header), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			break
		}
		var sec int64
		if _, err := fmt.Sscan(f[len(f)-2], &sec); err == nil {
			return time.Unix(sec, 0)
		}
	}
	return time.Time{}
}
