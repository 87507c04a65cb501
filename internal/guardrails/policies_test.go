package guardrails_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

// policies are the ValidatingAdmissionPolicies of config/guardrails, by
// name, each compiled as kube-apiserver compiles it.
var policies = sync.OnceValues(func() (map[string]compiled, error) {
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "guardrails", "*.yaml"))
	if err != nil {
		return nil, err
	}
	out := map[string]compiled{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil || tm.Kind != "ValidatingAdmissionPolicy" {
				continue
			}
			p := &admissionregistrationv1.ValidatingAdmissionPolicy{}
			if err := yaml.UnmarshalStrict([]byte(doc), p); err != nil {
				return nil, err
			}
			out[p.Name] = compiled{policy: p, validator: compile(p)}
		}
	}
	return out, nil
})

type compiled struct {
	policy    *admissionregistrationv1.ValidatingAdmissionPolicy
	validator validating.Validator
}

// compile is kube-apiserver's compilePolicy (validating/plugin.go), for the
// environment a cluster of this module's Kubernetes version offers.
func compile(p *admissionregistrationv1.ValidatingAdmissionPolicy) validating.Validator {
	hasParams := p.Spec.ParamKind != nil
	withAuthorizer := cel.OptionalVariableDeclarations{HasParams: hasParams, HasAuthorizer: true}
	forMessages := cel.OptionalVariableDeclarations{HasParams: hasParams, HasAuthorizer: false}
	c, err := cel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		panic(err)
	}
	vars := make([]cel.NamedExpressionAccessor, len(p.Spec.Variables))
	for i, v := range p.Spec.Variables {
		vars[i] = &validating.Variable{Name: v.Name, Expression: v.Expression}
	}
	c.CompileAndStoreVariables(vars, withAuthorizer, environment.StoredExpressions)
	var matcher matchconditions.Matcher
	if len(p.Spec.MatchConditions) > 0 {
		conds := make([]cel.ExpressionAccessor, len(p.Spec.MatchConditions))
		for i := range p.Spec.MatchConditions {
			conds[i] = (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i])
		}
		matcher = matchconditions.NewMatcher(c.CompileCondition(conds, withAuthorizer, environment.StoredExpressions),
			p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	validations := make([]cel.ExpressionAccessor, len(p.Spec.Validations))
	messages := make([]cel.ExpressionAccessor, len(p.Spec.Validations))
	for i, v := range p.Spec.Validations {
		validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
		if v.MessageExpression != "" {
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
	}
	return validating.NewValidator(
		c.CompileCondition(validations, withAuthorizer, environment.StoredExpressions),
		matcher,
		c.CompileCondition(nil, withAuthorizer, environment.StoredExpressions),
		c.CompileCondition(messages, forMessages, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)
}

// params is the policies' parameter as the chart installs it.
var params = &corev1.ConfigMap{
	TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
	ObjectMeta: metav1.ObjectMeta{Name: "careplane-guardrails", Namespace: "careplane-system"},
	Data:       map[string]string{"responderGroups": "careplane:incident-responders"},
}

// request is one admission request, as kube-apiserver hands it to a policy.
type request struct {
	op          admission.Operation
	kind        schema.GroupVersionKind
	resource    schema.GroupVersionResource
	subresource string
	namespace   string
	name        string
	object, old runtime.Object
	user        string
	groups      []string
	// namespaceObject is the request's Namespace (nil for cluster-scoped
	// requests).
	namespaceObject *corev1.Namespace
}

// verdict is what a policy decided on a request: denied (with the message),
// or failed to evaluate (with the error), or neither.
type verdict struct {
	denied, failed []string
}

func (v verdict) admitted() bool { return len(v.denied) == 0 && len(v.failed) == 0 }

// evaluate runs policy on r as kube-apiserver's validating admission does
// once the policy matches r, and returns its verdict.
func evaluate(t *testing.T, policy string, r request) verdict {
	t.Helper()
	all, err := policies()
	if err != nil {
		t.Fatalf("loading config/guardrails: %v", err)
	}
	p, ok := all[policy]
	if !ok {
		t.Fatalf("no ValidatingAdmissionPolicy %s in config/guardrails", policy)
	}
	return p.decide(r)
}

// attributes are r as admission hands it on.
func (r request) attributes() admission.Attributes {
	return admission.NewAttributesRecord(r.object, r.old, r.kind, r.namespace, r.name, r.resource, r.subresource, r.op,
		nil, false, &user.DefaultInfo{Name: r.user, Groups: r.groups})
}

// decide is c's verdict on r, with the parameter when c takes one.
func (c compiled) decide(r request) verdict {
	versioned := &admission.VersionedAttributes{Attributes: r.attributes(), VersionedKind: r.kind,
		VersionedObject: admission.NewLazyObject(r.object), VersionedOldObject: admission.NewLazyObject(r.old)}
	var param runtime.Object
	if c.policy.Spec.ParamKind != nil {
		param = params
	}
	res := c.validator.Validate(context.Background(), r.resource, versioned, param, r.namespaceObject, celconfig.RuntimeCELCostBudget, nil)
	var v verdict
	for _, d := range res.Decisions {
		switch {
		case d.Evaluation == validating.EvalError:
			v.failed = append(v.failed, d.Message)
		case d.Action == validating.ActionDeny:
			v.denied = append(v.denied, d.Message)
		}
	}
	return v
}

// wantDenied evaluates policy on r and fails unless it denies r exactly
// when denied says, without failing to evaluate either way.
func wantDenied(t *testing.T, policy string, r request, denied bool) {
	t.Helper()
	v := evaluate(t, policy, r)
	if len(v.failed) > 0 {
		t.Fatalf("%s failed to evaluate on %s %s by %s: %v", policy, r.op, r.resource.Resource, r.user, v.failed)
	}
	if got := len(v.denied) > 0; got != denied {
		t.Errorf("%s denied = %v (%v), want %v", policy, got, v.denied, denied)
	}
}
