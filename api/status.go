package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// pontoonResource names the store's own objects in Status details.
var pontoonResource = schema.GroupResource{Group: "pontoon.dev", Resource: "keys"}

// reasonInsufficientStorage is the Status reason of a write refused for
// lack of space.
const reasonInsufficientStorage metav1.StatusReason = "InsufficientStorage"

// statusFor turns an error into the Kubernetes Status a client gets, with
// the code and reason kube-apiserver would use for the same situation.
func statusFor(err error) *metav1.Status {
	var se apierrors.APIStatus
	var te *fsm.TxnError
	switch {
	case errors.As(err, &se):
		st := se.Status()
		return &st
	case errors.As(err, &te):
		switch te.Code {
		case fsm.CodeExists:
			return ptr.To(apierrors.NewAlreadyExists(pontoonResource, te.Key).Status())
		case fsm.CodeNotFound:
			return ptr.To(apierrors.NewNotFound(pontoonResource, te.Key).Status())
		case fsm.CodeConflict:
			return ptr.To(apierrors.NewConflict(pontoonResource, te.Key, te).Status())
		case fsm.CodeTooLarge:
			return ptr.To(apierrors.NewRequestEntityTooLargeError(te.Error()).Status())
		default:
			return ptr.To(apierrors.NewBadRequest(te.Error()).Status())
		}
	case errors.Is(err, fsm.ErrCompacted):
		return ptr.To(apierrors.NewResourceExpired(err.Error()).Status())
	case errors.Is(err, fsm.ErrBadSnapshot):
		return ptr.To(apierrors.NewBadRequest(err.Error()).Status())
	case errors.Is(err, raftstore.ErrUnknownPeer):
		st := apierrors.NewNotFound(schema.GroupResource{Group: "pontoon.dev", Resource: "raftpeers"}, "").Status()
		st.Message = err.Error() // names the server, where "raftpeers.pontoon.dev" would not help
		return &st
	case errors.Is(err, raftstore.ErrUnknownOutcome), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ptr.To(apierrors.NewTimeoutError(err.Error(), 1).Status())
	case errors.Is(err, raftstore.ErrRestoreRunning):
		return &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusConflict, Reason: metav1.StatusReasonConflict, Message: err.Error()}
	case errors.Is(err, raftstore.ErrNoSpace):
		// kube-apiserver has no answer of its own for this: 507 is
		// HTTP's, and the message says which server and how to recover.
		return &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInsufficientStorage, Reason: reasonInsufficientStorage, Message: err.Error()}
	case errors.Is(err, raftstore.ErrNoLeader), errors.Is(err, raftstore.ErrNotLeader):
		return ptr.To(apierrors.NewServiceUnavailable(err.Error()).Status())
	default:
		return ptr.To(apierrors.NewInternalError(err).Status())
	}
}

// writeError writes err as a Status.
func writeError(w http.ResponseWriter, err error) {
	st := statusFor(err)
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	if st.Code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
