package kube

import (
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// The media types the API speaks.
const (
	mediaJSON     = runtime.ContentTypeJSON
	mediaYAML     = runtime.ContentTypeYAML
	mediaProtobuf = runtime.ContentTypeProtobuf
)

// outputKind is what the client asked to receive instead of the object
// itself (the "as" parameter of the Accept header).
type outputKind int

const (
	asObject outputKind = iota
	asTable
	asPartialMetadata
	asDiscovery // aggregated discovery
)

// output is the negotiated response format.
type output struct {
	info runtime.SerializerInfo
	kind outputKind
	// discoveryVersion is v2 or v2beta1 for asDiscovery.
	discoveryVersion string
}

// negotiate picks the first entry of the Accept header the API can
// produce, as kube-apiserver does; allowed says which conversions the
// endpoint supports. An empty or wildcard Accept gets JSON.
func (h *Handler) negotiate(r *http.Request, allowed ...outputKind) (output, error) {
	accept := r.Header.Get("Accept")
	if accept == "" {
		accept = mediaJSON
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "*/*", "application/*":
			mt = mediaJSON
		}
		info, ok := runtime.SerializerInfoForMediaType(h.codecs.SupportedMediaTypes(), mt)
		if !ok {
			continue
		}
		out := output{info: info}
		switch as := params["as"]; {
		case as == "":
		case as == "Table" && params["g"] == "meta.k8s.io" && params["v"] == "v1" && mt != mediaProtobuf:
			out.kind = asTable
		case (as == "PartialObjectMetadata" || as == "PartialObjectMetadataList") && params["g"] == "meta.k8s.io" && params["v"] == "v1":
			out.kind = asPartialMetadata
		case as == "APIGroupDiscoveryList" && params["g"] == "apidiscovery.k8s.io" && params["v"] == "v2":
			out.kind, out.discoveryVersion = asDiscovery, params["v"]
		default:
			continue
		}
		if out.kind == asObject || slices.Contains(allowed, out.kind) {
			return out, nil
		}
	}
	return output{}, statusError(http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable,
		fmt.Sprintf("only the following media types are accepted: %s", strings.Join(mediaTypes(h.codecs), ", ")))
}

// requestSerializer returns the serializer for a request body's
// Content-Type, or a 415 Status.
func (h *Handler) requestSerializer(r *http.Request) (runtime.SerializerInfo, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = mediaJSON
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		if info, ok := runtime.SerializerInfoForMediaType(h.codecs.SupportedMediaTypes(), mt); ok {
			return info, nil
		}
	}
	return runtime.SerializerInfo{}, statusError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
		fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s", strings.Join(mediaTypes(h.codecs), ", ")))
}

func mediaTypes(c serializer.CodecFactory) []string {
	var out []string
	for _, info := range c.SupportedMediaTypes() {
		out = append(out, info.MediaType)
	}
	return out
}

// statusError is a Status error with a code and reason apierrors has no
// constructor for.
func statusError(code int32, reason metav1.StatusReason, msg string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}}
}
