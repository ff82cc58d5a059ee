package v1alpha1

// Condition types, in kstatus's vocabulary: Ready is always present;
// Reconciling and Stalled are present only while they are True.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Reasons for conditions and events.
const (
	ReasonSynced            = "Synced"
	ReasonProgressing       = "Progressing"
	ReasonOutOfSync         = "OutOfSync"
	ReasonFetchFailed       = "FetchFailed"
	ReasonRenderFailed      = "RenderFailed"
	ReasonValidationFailed  = "ValidationFailed"
	ReasonApplyFailed       = "ApplyFailed"
	ReasonPruneFailed       = "PruneFailed"
	ReasonHealthCheckFailed = "HealthCheckFailed"
	ReasonSuspended         = "Suspended"
	ReasonRetryLimitReached = "RetryLimitReached"
	ReasonDeleting          = "Deleting"
)
