// Package eventscan checks events for the characters that must never
// reach one: CR, LF and NUL (a header value carrying "\r\nRefer-To: …"
// must be refused before it is serialised anywhere). Tests and fuzz
// targets of the router and transfer use it on every event they publish.
package eventscan

import (
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Forbidden are the characters no event field may hold.
const Forbidden = "\r\n\x00"

// Find returns the first string of m (fields, list elements, map keys and
// values, nested messages) that holds CR, LF or NUL, as "field=value";
// ok is false when there is one.
func Find(m proto.Message) (field string, ok bool) {
	if m == nil {
		return "", true
	}
	var bad string
	var walk func(protoreflect.Message)
	check := func(fd protoreflect.FieldDescriptor, v protoreflect.Value, k protoreflect.Kind) {
		switch k {
		case protoreflect.StringKind:
			if bad == "" && strings.ContainsAny(v.String(), Forbidden) {
				bad = string(fd.FullName()) + "=" + v.String()
			}
		case protoreflect.MessageKind, protoreflect.GroupKind:
			walk(v.Message())
		}
	}
	walk = func(msg protoreflect.Message) {
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList():
				for i := 0; i < v.List().Len(); i++ {
					check(fd, v.List().Get(i), fd.Kind())
				}
			case fd.IsMap():
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					check(fd, k.Value(), fd.MapKey().Kind())
					check(fd, mv, fd.MapValue().Kind())
					return true
				})
			default:
				check(fd, v, fd.Kind())
			}
			return bad == ""
		})
	}
	walk(m.ProtoReflect())
	return bad, bad == ""
}
