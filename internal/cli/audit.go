package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

// whoami asks the apiserver who the client is (SelfSubjectReview); it
// returns "" when the server does not say.
func whoami(ctx context.Context, c client.Client) string {
	r := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, r); err != nil {
		return ""
	}
	return r.Status.UserInfo.Username
}

// auditor records the mutating actions taken through converge on one app:
// in the app's history record and as an Event on the Application.
type auditor struct {
	c         client.Client
	streams   Streams
	namespace string
	user      string
}

func newAuditor(ctx context.Context, c client.Client, streams Streams, namespace string) *auditor {
	return &auditor{c: c, streams: streams, namespace: namespace, user: whoami(ctx, c)}
}

// record writes the action; failures are reported, not returned: the
// action itself is done.
func (a *auditor) record(ctx context.Context, app *v1alpha1.Application, action, detail string) {
	user := a.user
	if user == "" {
		user = "unknown"
	}
	limit := 0
	if app.Spec.HistoryLimit != nil {
		limit = int(*app.Spec.HistoryLimit)
	}
	now := time.Now().UTC()
	err := engine.RecordAction(ctx, a.c, engine.App{Name: app.Name, Namespace: a.namespace},
		engine.ActionEntry{Time: now, User: user, Action: action, Detail: detail}, limit)
	if err != nil {
		fmt.Fprintf(a.streams.ErrOut, "warning: recording the %s action: %v\n", action, err)
	}
	msg := fmt.Sprintf("%s by %s", action, user)
	if detail != "" {
		msg += ": " + detail
	}
	ref := corev1.ObjectReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "Application",
		Namespace: a.namespace, Name: app.Name, UID: app.UID, ResourceVersion: app.ResourceVersion,
	}
	if err := emitEvent(ctx, a.c, ref, corev1.EventTypeNormal, v1alpha1.ReasonAction, msg); err != nil {
		fmt.Fprintf(a.streams.ErrOut, "warning: emitting the %s event: %v\n", action, err)
	}
}

// emitEvent records a Kubernetes Event about ref, from the CLI.
func emitEvent(ctx context.Context, c client.Client, ref corev1.ObjectReference, typ, reason, msg string) error {
	host, _ := os.Hostname()
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: ref.Name + ".", Namespace: ref.Namespace},
		InvolvedObject: ref,
		Reason:         reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "converge-cli", Host: host},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "converge.dev/cli", ReportingInstance: host,
	}
	return c.Create(ctx, ev)
}
