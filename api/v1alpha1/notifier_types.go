package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Notifier is a receiver of notifications that the Alerts of its
// namespace share, as Flux's Provider is: one Slack channel, webhook or
// forge for many Applications, configured once. Its Secret is read, and
// its URL checked against the Tenant's rules, as the account of the app
// whose event is sent, exactly as an app's own spec.notify.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=converge
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Notifier struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NotifierSpec `json:"spec"`
}

// NotifierList is a list of Notifiers.
//
// +kubebuilder:object:root=true
type NotifierList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Notifier `json:"items"`
}

// NotifierSpec is where and how messages go: the fields of an app's
// spec.notify entry but its events, which Alerts choose.
type NotifierSpec struct {
	// Type is a receiver type, as spec.notify[].type.
	// +kubebuilder:validation:Enum=webhook;slack;msteams;discord;alertmanager;github;gitlab;gitea;bitbucket;smtp
	Type string `json:"type"`
	// URL, as spec.notify[].url.
	// +optional
	URL string `json:"url,omitempty"`
	// Repository, as spec.notify[].repository.
	// +optional
	Repository string `json:"repository,omitempty"`
	// SecretRef names a Secret in the Notifier's namespace ("token",
	// "hmac", "url"), as spec.notify[].secretRef.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Template writes the message, as spec.notify[].template.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Template string `json:"template,omitempty"`
	// Email, as spec.notify[].email.
	// +optional
	Email *EmailSettings `json:"email,omitempty"`
	// Suspend stops every Alert's deliveries to this Notifier.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// Alert sends the events of the Applications of its namespace that it
// selects to a Notifier, as Flux's Alert does.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=converge
// +kubebuilder:printcolumn:name="Notifier",type=string,JSONPath=`.spec.notifierRef.name`
// +kubebuilder:printcolumn:name="Severity",type=string,JSONPath=`.spec.severity`
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Alert struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AlertSpec `json:"spec"`
}

// AlertList is a list of Alerts.
//
// +kubebuilder:object:root=true
type AlertList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Alert `json:"items"`
}

// AlertSpec chooses events and where they go.
type AlertSpec struct {
	// NotifierRef names the Notifier, in the Alert's namespace.
	NotifierRef LocalObjectReference `json:"notifierRef"`
	// Events are the events sent; default all (as spec.notify[].events).
	// +optional
	Events []NotifyEvent `json:"events,omitempty"`
	// Severity "error" sends only failures (SyncFailed, HealthDegraded);
	// "info" (the default) sends every event Events allows.
	// +kubebuilder:validation:Enum=info;error
	// +optional
	Severity string `json:"severity,omitempty"`
	// Applications selects the Applications of the namespace by label;
	// default: all of them. Names, if set, narrows it to those names.
	// +optional
	Applications *metav1.LabelSelector `json:"applications,omitempty"`
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Names []string `json:"names,omitempty"`
	// Suspend stops this Alert's deliveries.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// Alert severities.
const (
	SeverityInfo  = "info"
	SeverityError = "error"
)

func init() {
	SchemeBuilder.Register(&Notifier{}, &NotifierList{}, &Alert{}, &AlertList{})
}
