package v1alpha1

// Condition types, in kstatus's vocabulary: Ready is always present;
// Reconciling and Stalled are present only while they are True.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	// ConditionPinned is True while spec.pin holds the Application at a
	// revision; its message says how far the branch has moved on.
	ConditionPinned = "Pinned"
)

// Reasons for conditions and events.
const (
	ReasonSynced             = "Synced"
	ReasonProgressing        = "Progressing"
	ReasonOutOfSync          = "OutOfSync"
	ReasonFetchFailed        = "FetchFailed"
	ReasonRenderFailed       = "RenderFailed"
	ReasonValidationFailed   = "ValidationFailed"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonPruneFailed        = "PruneFailed"
	ReasonHealthCheckFailed  = "HealthCheckFailed"
	ReasonHookFailed         = "HookFailed"
	ReasonSuspended          = "Suspended"
	ReasonRetryLimitReached  = "RetryLimitReached"
	ReasonDeleting           = "Deleting"
	ReasonVerificationFailed = "VerificationFailed"
	ReasonPinned             = "Pinned"
	ReasonRollbackFailed     = "RollbackFailed"
	ReasonRolledBack         = "RolledBack"
	ReasonSyncStarted        = "SyncStarted"
	ReasonAction             = "Action"
	// ReasonDependencyNotReady: an Application this one depends on is
	// not Synced and Healthy yet; the sync waits.
	ReasonDependencyNotReady = "DependencyNotReady"
	// ReasonDependencyCycle: the Application depends, through others, on
	// itself.
	ReasonDependencyCycle = "DependencyCycle"
	// ReasonPolicyViolation: the Application, or an object it renders,
	// breaks its Tenant's rules, or no Tenant governs it where one must.
	ReasonPolicyViolation = "PolicyViolation"
)

// Reasons of a SealedSecret's Ready condition.
const (
	ReasonUnsealed       = "Unsealed"
	ReasonWrongScope     = "WrongScope"
	ReasonUnknownKey     = "UnknownKey"
	ReasonTampered       = "Tampered"
	ReasonMalformed      = "Malformed"
	ReasonSecretNotOwned = "SecretNotOwned"
	ReasonWriteFailed    = "WriteFailed"
)
