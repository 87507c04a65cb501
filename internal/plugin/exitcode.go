package plugin

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Exit codes of kubectl careplane. Incident tooling scripts the plugin, so
// each kind of failure a script acts on differently has its own code; they
// are part of the plugin's interface (docs/runbook.md lists them) and never
// change meaning.
const (
	// ExitOK: the command did what it was asked, and an environment it
	// checked is as it should be.
	ExitOK = 0
	// ExitError: any failure without a code of its own (a conflict, the
	// API server unreachable, a refused purge, several kinds at once).
	ExitError = 1
	// ExitUsage: the command line is wrong (unknown command or flag, a
	// missing argument, --reason missing, a selector that does not parse,
	// purge-evidence without a confirmation); nothing was sent.
	ExitUsage = 2
	// ExitNotFound: the environment, or any environment matching the
	// selector, does not exist.
	ExitNotFound = 3
	// ExitForbidden: the API server refused the caller: RBAC, or a
	// careplane guardrail (for example a fence by someone outside the
	// responder groups), or credentials it does not accept.
	ExitForbidden = 4
	// ExitTimeout: the change is written, but the operator did not report
	// the new state within --timeout (or the API server timed out).
	ExitTimeout = 5
	// ExitNotIsolated: an environment that should be fenced is not
	// isolated: verify found an allowed flow, or status shows a fenced
	// environment whose Fenced or IsolationVerified condition is not True.
	ExitNotIsolated = 6
	// ExitRestoreBlocked: the operator refuses the restore (for example an
	// unknown revision); the fence stays.
	ExitRestoreBlocked = 7
	// ExitPreflightFailed: doctor found careplane not installed or not
	// working as it must (a check failed on what it saw).
	ExitPreflightFailed = 8
)

var (
	// ErrNotIsolated is the cause of every "not isolated" failure
	// (ExitNotIsolated).
	ErrNotIsolated = errors.New("not isolated")
	// ErrRestoreBlocked is the cause of a blocked restore
	// (ExitRestoreBlocked).
	ErrRestoreBlocked = errors.New("restore blocked")
	// ErrPreflightFailed is the cause of a failed doctor
	// (ExitPreflightFailed).
	ErrPreflightFailed = errors.New("preflight failed")
	// ErrCannotCheck is the cause of a doctor whose only failures are
	// checks the API server refused the caller (ExitForbidden).
	ErrCannotCheck = errors.New("cannot check")
)

// usageError marks a wrong command line (ExitUsage).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef is a usage error (ExitUsage) with a message for the user.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// causeError shows msg to the user and keeps cause for ExitCode: an API
// server's message verbatim without losing that it was a denial, or a
// timeout said in words.
type causeError struct {
	msg   string
	cause error
}

func (e causeError) Error() string { return e.msg }
func (e causeError) Unwrap() error { return e.cause }

// withCause returns an error reading msg whose exit code is cause's.
func withCause(cause error, format string, args ...any) error {
	return causeError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// ExitCode is the one place that maps an error to the process's exit code.
// An error joining several (a fleet fence) has the code they share, or
// ExitError when they differ: a script told "forbidden" must be able to
// trust that every failure was one.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var u usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	return classify(err)
}

// classify walks err's chain itself, link by link, rather than with
// errors.Is and errors.As: those stop at the first match in a joined
// error, and ExitCode must see every one.
func classify(err error) int {
	if multi, ok := err.(interface{ Unwrap() []error }); ok { //nolint:errorlint // walking the chain link by link

		code := -1
		for _, e := range multi.Unwrap() {
			if e == nil {
				continue
			}
			switch c := classify(e); {
			case code == -1:
				code = c
			case c != code:
				return ExitError
			}
		}
		if code == -1 {
			return ExitError
		}
		return code
	}
	if code := direct(err); code != ExitError {
		return code
	}
	if next := errors.Unwrap(err); next != nil {
		return classify(next)
	}
	return ExitError
}

// sentinels are the errors that have a code of their own.
var sentinels = []struct {
	err  error
	code int
}{
	{ErrNotIsolated, ExitNotIsolated},
	{ErrRestoreBlocked, ExitRestoreBlocked},
	{ErrPreflightFailed, ExitPreflightFailed},
	{ErrCannotCheck, ExitForbidden},
	{context.DeadlineExceeded, ExitTimeout},
}

// direct is the code of err itself, not of what it wraps.
func direct(err error) int {
	for _, s := range sentinels {
		// Not a map lookup: an error of a slice type (an aggregate)
		// cannot be a map key.
		if err == s.err { //nolint:errorlint // this link only; classify unwraps
			return s.code
		}
	}
	if _, ok := err.(apierrors.APIStatus); ok { //nolint:errorlint // this link only; classify unwraps
		switch {
		case apierrors.IsNotFound(err):
			return ExitNotFound
		case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
			return ExitForbidden
		case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
			return ExitTimeout
		}
	}
	return ExitError
}
