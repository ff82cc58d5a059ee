package source

import (
	"crypto/ed25519"
	"testing"

	"golang.org/x/crypto/ssh"
)

// FuzzVerify feeds arbitrary commit and tag objects and allowed-signers
// files to the verifier: they come from Git servers and Secrets, so they
// must never crash it, and nothing unsigned may pass.
func FuzzVerify(f *testing.F) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		f.Fatal(err)
	}
	line := "alice@example.com " + string(ssh.MarshalAuthorizedKey(sshPub))
	f.Add([]byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1700000000 +0000\ncommitter a <a@b> 1700000000 +0000\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n\nmsg\n"), []byte(line))
	f.Add([]byte("object 4b82\ntype commit\ntag v1\ntagger t <t@x> 1700000000 +0000\n\nmsg\n-----BEGIN PGP SIGNATURE-----\n\nwsA\n-----END PGP SIGNATURE-----\n"), []byte(`a,b namespaces="git",valid-after="20200101" `+line))
	f.Fuzz(func(t *testing.T, object, signers []byte) {
		trust, err := ParseTrustedKeys(map[string][]byte{"allowed_signers": signers})
		if err != nil {
			return
		}
		if s, err := trust.VerifyCommit(object); err == nil {
			t.Fatalf("a fuzzed commit verified: %+v", s)
		}
		if s, err := trust.VerifyTag(object); err == nil {
			t.Fatalf("a fuzzed tag verified: %+v", s)
		}
	})
}
