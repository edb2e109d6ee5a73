package resource

import (
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Pontoon has no authentication and no authorization yet: every request
// is allowed, as kube-apiserver's are with --anonymous-auth and
// --authorization-mode=AlwaysAllow. The reviews say so to the clients
// that ask (kubectl auth can-i, kubectl auth whoami, and dashboards that
// hide what the user may not do), with the answers kube-apiserver gives
// in that mode.

// typedReview adapts a review written for one type to the registry's
// signature.
func typedReview[T runtime.Object](f func(T) error) func(runtime.Object) error {
	return func(obj runtime.Object) error { return f(obj.(T)) }
}

// reviewAccess answers a SelfSubjectAccessReview: allowed.
func reviewAccess(r *authorizationv1.SelfSubjectAccessReview) error {
	r.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: true}
	return nil
}

// reviewRules answers a SelfSubjectRulesReview with the AlwaysAllow
// authorizer's rules: every verb on everything.
func reviewRules(r *authorizationv1.SelfSubjectRulesReview) error {
	if r.Spec.Namespace == "" {
		return apierrors.NewBadRequest("no namespace on request")
	}
	all := []string{"*"}
	r.Status = authorizationv1.SubjectRulesReviewStatus{
		ResourceRules:    []authorizationv1.ResourceRule{{Verbs: all, APIGroups: all, Resources: all}},
		NonResourceRules: []authorizationv1.NonResourceRule{{Verbs: all, NonResourceURLs: all}},
	}
	return nil
}

// reviewSelf answers a SelfSubjectReview with who a request without
// credentials is in kube-apiserver.
func reviewSelf(r *authenticationv1.SelfSubjectReview) error {
	r.Status = authenticationv1.SelfSubjectReviewStatus{UserInfo: authenticationv1.UserInfo{
		Username: "system:anonymous", Groups: []string{"system:unauthenticated"}}}
	return nil
}

// emptyMeta is the reviews' rule for metadata: a review is not an object
// anyone stores, so it has none.
func emptyMeta(m metav1.ObjectMeta) field.ErrorList {
	m.ManagedFields = nil
	if !apiequality.Semantic.DeepEqual(metav1.ObjectMeta{}, m) {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), m, "must be empty")}
	}
	return nil
}

func validateAccessReview(r, _ *authorizationv1.SelfSubjectAccessReview) field.ErrorList {
	errs := emptyMeta(r.ObjectMeta)
	spec := field.NewPath("spec")
	switch {
	case r.Spec.ResourceAttributes != nil && r.Spec.NonResourceAttributes != nil:
		errs = append(errs, field.Invalid(spec.Child("nonResourceAttributes"), r.Spec.NonResourceAttributes, "cannot be specified in combination with resourceAttributes"))
	case r.Spec.ResourceAttributes == nil && r.Spec.NonResourceAttributes == nil:
		errs = append(errs, field.Invalid(spec.Child("resourceAttributes"), r.Spec.NonResourceAttributes, "exactly one of nonResourceAttributes or resourceAttributes must be specified"))
	}
	return errs
}

func validateRulesReview(r, _ *authorizationv1.SelfSubjectRulesReview) field.ErrorList {
	return emptyMeta(r.ObjectMeta)
}

func validateSelfReview(r, _ *authenticationv1.SelfSubjectReview) field.ErrorList {
	return emptyMeta(r.ObjectMeta)
}
