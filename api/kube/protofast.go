package kube

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Objects are stored in the Protobuf form clients ask for, so a Protobuf
// list or watch needs no decoding and encoding per object: the stored
// message is sent as it is, with the resourceVersion added. Every
// Kubernetes object has its ObjectMeta as field 1 and every list its
// ListMeta as field 1 and its items as field 2; a second ObjectMeta field
// holding only the resourceVersion (field 6) is merged into the first by
// every Protobuf decoder, as the encoding specifies for a repeated
// embedded message.

// protoPrefix starts every Kubernetes Protobuf object (runtime.Unknown).
var protoPrefix = []byte{0x6b, 0x38, 0x73, 0x00}

// Field numbers of runtime.Unknown, ObjectMeta and lists.
const (
	unknownTypeMeta      = 1
	unknownRaw           = 2
	metaField            = 1
	listItemsField       = 2
	objectMetaResVersion = 6
)

var errNotProtobuf = errors.New("stored value is not a Kubernetes Protobuf object")

// storedMessage returns the object message inside a stored envelope.
func storedMessage(value []byte) ([]byte, error) {
	b, ok := bytes.CutPrefix(value, protoPrefix)
	if !ok {
		return nil, errNotProtobuf
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %v", errNotProtobuf, protowire.ParseError(n))
		}
		b = b[n:]
		if num == unknownRaw && typ == protowire.BytesType {
			raw, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, fmt.Errorf("%w: %v", errNotProtobuf, protowire.ParseError(m))
			}
			return raw, nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, fmt.Errorf("%w: %v", errNotProtobuf, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil, errNotProtobuf
}

// appendMessageWithRV appends msg, the object with its resourceVersion
// set to rev, to dst.
func appendMessageWithRV(dst, msg []byte, rev uint64) []byte {
	var digits [20]byte
	var metaBuf [maxRVField]byte
	meta := protowire.AppendTag(metaBuf[:0], objectMetaResVersion, protowire.BytesType)
	meta = protowire.AppendBytes(meta, strconv.AppendUint(digits[:0], rev, 10))
	dst = append(dst, msg...)
	dst = protowire.AppendTag(dst, metaField, protowire.BytesType)
	return protowire.AppendBytes(dst, meta)
}

// envelope wraps a message in the runtime.Unknown envelope of its kind,
// written once into a buffer of its exact size.
func envelope(gvk schema.GroupVersionKind, msg []byte) ([]byte, error) {
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind}, Raw: msg}
	b := make([]byte, len(protoPrefix)+u.Size())
	copy(b, protoPrefix)
	if _, err := u.MarshalToSizedBuffer(b[len(protoPrefix):]); err != nil {
		return nil, err
	}
	return b, nil
}

// maxRVField bounds what appendMessageWithRV adds to a message (two tags,
// two lengths and a uint64 in decimal: at most 24 bytes), with room for
// the tag and length a list puts before each item.
const maxRVField = 32

// protoObject is a stored object in Protobuf with its resourceVersion.
func protoObject(gvk schema.GroupVersionKind, value []byte, rev uint64) ([]byte, error) {
	msg, err := storedMessage(value)
	if err != nil {
		return nil, err
	}
	return envelope(gvk, appendMessageWithRV(make([]byte, 0, len(msg)+maxRVField), msg, rev))
}

// protoList is a list of stored objects in Protobuf; a value that is not
// a stored object is left out and handed to corrupt with its index.
func protoList(listGVK schema.GroupVersionKind, lm metav1.ListMeta, values [][]byte, revs []uint64, corrupt func(i int, err error)) ([]byte, error) {
	meta, err := lm.Marshal()
	if err != nil {
		return nil, err
	}
	size := len(meta) + 16
	for _, v := range values {
		size += len(v) + maxRVField
	}
	body := make([]byte, 0, size)
	body = protowire.AppendTag(body, metaField, protowire.BytesType)
	body = protowire.AppendBytes(body, meta)
	var item []byte
	for i, v := range values {
		msg, err := storedMessage(v)
		if err != nil {
			corrupt(i, err)
			continue
		}
		item = appendMessageWithRV(item[:0], msg, revs[i])
		body = protowire.AppendTag(body, listItemsField, protowire.BytesType)
		body = protowire.AppendBytes(body, item)
	}
	return envelope(listGVK, body)
}
