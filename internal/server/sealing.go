package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"converge.dev/converge/internal/seal"
)

// Sealing serves the sealing certificate and re-encryption:
//
//	GET  /v1/cert.pem  the newest certificate (PEM)
//	POST /v1/reseal    a ResealRequest; answers a ResealResponse whose
//	                   values are sealed with the newest key
//
// Neither ever returns plaintext.
type Sealing struct {
	Keys *seal.Store
	Log  logr.Logger

	// busy bounds concurrent re-encryptions: each value costs an RSA
	// decryption, and the endpoint needs no credentials.
	busy chan struct{}
}

// maxResealValues bounds the values of one re-encryption request.
const maxResealValues = 256

// ResealRequest carries sealed values and the scope they are bound to.
type ResealRequest struct {
	Scope         string            `json:"scope"`
	Namespace     string            `json:"namespace"`
	Name          string            `json:"name"`
	EncryptedData map[string]string `json:"encryptedData"`
}

// ResealResponse carries the values sealed again.
type ResealResponse struct {
	KeyID         string            `json:"keyID"`
	EncryptedData map[string]string `json:"encryptedData"`
}

// Register adds the endpoints to mux.
func (s *Sealing) Register(mux *http.ServeMux) {
	s.busy = make(chan struct{}, 2)
	mux.HandleFunc("/v1/cert.pem", s.cert)
	// Each re-encryption costs RSA decryptions: one client gets one
	// request a second, in bursts of five.
	mux.Handle("/v1/reseal", (&RateLimit{Rate: 1, Burst: 5}).Wrap(http.HandlerFunc(s.reseal)))
}

func (s *Sealing) keyring(ctx context.Context) (*seal.Keyring, error) {
	ring, err := s.Keys.Keyring(ctx, time.Minute)
	if err != nil {
		return nil, err
	}
	if ring.Newest() == nil {
		return nil, errors.New("no sealing key yet")
	}
	return ring, nil
}

func (s *Sealing) cert(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	ring, err := s.keyring(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(ring.Newest().CertPEM)
}

func (s *Sealing) reseal(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req ResealRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		http.Error(w, "malformed request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.EncryptedData) > maxResealValues {
		http.Error(w, "too many values in one request", http.StatusRequestEntityTooLarge)
		return
	}
	select {
	case s.busy <- struct{}{}:
		defer func() { <-s.busy }()
	case <-r.Context().Done():
		return
	}
	scope, err := seal.ParseScope(req.Scope)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The keyring is cached (a minute at most); an unknown key id below
	// reloads it, so a rotation is seen at once without a LIST of Secrets
	// per request.
	ring, err := s.Keys.Keyring(r.Context(), time.Minute)
	if err == nil && ring.Newest() == nil {
		err = errors.New("no sealing key yet")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := ResealResponse{KeyID: ring.Newest().ID.String(), EncryptedData: map[string]string{}}
	for key, v := range req.EncryptedData {
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			http.Error(w, "encryptedData["+key+"]: not base64", http.StatusBadRequest)
			return
		}
		p, err := seal.Parse(raw)
		if err == nil && !ring.Has(p.KeyID) {
			ring, err = s.Keys.Load(r.Context())
		}
		if err != nil {
			http.Error(w, "encryptedData["+key+"]: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		moved, err := ring.Reseal(raw, scope, req.Namespace, req.Name)
		if err != nil {
			http.Error(w, "encryptedData["+key+"]: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		out.EncryptedData[key] = base64.StdEncoding.EncodeToString(moved)
	}
	s.Log.Info("resealed", "namespace", req.Namespace, "name", req.Name, "keys", len(out.EncryptedData), "keyID", out.KeyID)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
