package cluster

import "fmt"

// Loopback ports of the first local cluster ("a"). They are fixed so that a
// restarted cluster keeps its kubeconfig; they sit away from the components'
// defaults so that a cluster started some other way does not collide. Each
// further instance (b, c, ...) adds portStride per letter.
const (
	etcdClientPort    = 16379
	etcdPeerPort      = 16380
	apiserverPort     = 16443
	controllerMgrPort = 16257
	schedulerPort     = 16259
	kwokPort          = 16247
	oidcPort          = 16556
	portStride        = 1000

	serviceCIDR = "10.0.0.0/16"
	serviceIP   = "10.0.0.1"
	podCIDR     = "10.244.0.1/16"

	// nodeCount fake nodes are registered; kwok acts as their kubelet.
	nodeCount = 3
	// kwokAnnotation marks the nodes kwok manages.
	kwokAnnotation = "kwok.x-k8s.io/node"
)

// auditPolicy records every request at Metadata level, once per request (at
// ResponseComplete), so tests and benchmarks can count requests by verb,
// resource and user agent.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// kwokStages drives the fake nodes and pods. Nodes become Ready at once and
// stay so (kwok renews their leases); a scheduled pod becomes Running and
// Ready; a pod marked for deletion is removed; a pod whose containers all
// finish (restartPolicy Never or OnFailure, as Jobs use) succeeds.
const kwokStages = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: converge-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - type: {{ .type | Quote }}
        status: {{ .status | Quote }}
        reason: {{ .reason | Quote }}
        message: {{ .message | Quote }}
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      - type: Hostname
        address: {{ .metadata.name | Quote }}
      capacity: {cpu: "1000", memory: 4Ti, pods: "10000"}
      allocatable: {cpu: "1000", memory: 4Ti, pods: "10000"}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: kwok
      daemonEndpoints:
        kubeletEndpoint:
          Port: KWOK_PORT
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: converge-pod-running
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Pending]
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      {{ range list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
      - type: {{ . }}
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      {{ range .spec.readinessGates }}
      - type: {{ .conditionType | Quote }}
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: converge-pod-succeeded
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Running]
    - key: .spec.restartPolicy
      operator: In
      values: [Never, OnFailure]
    - key: .metadata.ownerReferences.[].kind
      operator: In
      values: [Job]
  delay:
    durationMilliseconds: 1000
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Succeeded
      conditions:
      - type: Ready
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{ $now | Quote }}
      - type: ContainersReady
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{ $now | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: converge-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
  next:
    finalizers:
      empty: true
    delete: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: converge-pod-logs
spec:
  selector: {}
  logs:
  - containers: []
    logsFile: POD_LOG_FILE
    follow: true
`

// nodeManifest is the JSON of fake node name, created through the API.
func nodeManifest(name string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,`+
		`"annotations":{%q:"fake"},`+
		`"labels":{"type":"kwok","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","kubernetes.io/hostname":%q}}}`,
		name, kwokAnnotation, name)
}
