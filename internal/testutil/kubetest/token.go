package kubetest

import (
	"context"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceAccountKubeconfig writes to path a kubeconfig for cfg's cluster
// that authenticates as ServiceAccount ns/name with a fresh token (an
// hour), and returns the user name the apiserver, and its audit log, know
// that account by. The account must exist.
func ServiceAccountKubeconfig(ctx context.Context, cfg *rest.Config, ns, name, path string) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	expiry := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", err
	}
	return "system:serviceaccount:" + ns + ":" + name, nil
}

// AdminKubeconfig creates ServiceAccount ns/name bound to cluster-admin
// (binding "<ns>-<name>") and writes a kubeconfig for it to path: a client
// with an identity of its own, told apart from every other in the audit
// log. It returns that user name and a function deleting the binding.
func AdminKubeconfig(ctx context.Context, c client.Client, cfg *rest.Config, ns, name, path string) (string, func(), error) {
	if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
	if err := c.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", nil, err
	}
	unbind := func() { _ = c.Delete(context.Background(), binding) }
	user, err := ServiceAccountKubeconfig(ctx, cfg, ns, name, path)
	if err != nil {
		unbind()
		return "", nil, err
	}
	return user, unbind, nil
}
