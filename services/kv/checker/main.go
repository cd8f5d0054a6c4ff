// kvchecker checks a history of the KV store (services/kv) for linearizability with porcupine,
// on a sequential model of the store partitioned by key, as porcupine's own KV test model is.
//
//	kvchecker [-visualize out.html] [-timeout 60s] history.json
//
// It prints one JSON line, {"linearizable":…,"unknown":…,"operations":N,"keys":K}, where N counts
// the operations checked (an op that certainly failed, and a get whose outcome is unknown, have no
// effect and are left out) and K the keys they touch. It exits 0 when the history is linearizable,
// 1 when it is not, 2 when the history cannot be read (stderr names the op and the field), and 3
// when the timeout ran out before a verdict ("unknown": true). -visualize writes porcupine's HTML
// view of the history and its (partial) linearizations, whatever the verdict.
//
// The history is JSON: {"ops":[{"client","op","key","value","ifValue","call","return","outcome",
// "found","got","swapped"}]}, as services/kv/fixtures/porcupine.ts records it.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/anishathalye/porcupine"
)

// Exit codes.
const (
	exitLinearizable    = 0
	exitNotLinearizable = 1
	exitBadInput        = 2
	exitUnknown         = 3
)

// never is the return time of an operation whose outcome is unknown: it may take effect at any
// point after its call, or never, which a linearization at the very end stands for.
const never int64 = math.MaxInt64

type opKind int

const (
	opGet opKind = iota
	opPut
	opDelete
	opCas
)

var opNames = map[string]opKind{"get": opGet, "put": opPut, "delete": opDelete, "cas": opCas}

// kvInput is what a client asked (porcupine's Operation.Input).
type kvInput struct {
	kind     opKind
	key      string
	value    string // put, cas: the value written
	ifAbsent bool   // cas: ifValue was null, so the key must be absent
	ifValue  string // cas, unless ifAbsent
}

// kvOutput is what the client was told (porcupine's Operation.Output).
type kvOutput struct {
	unknown bool   // no answer: the operation may or may not have taken effect
	found   bool   // get
	got     string // get, when found
	swapped bool   // cas
}

// register is one key's state: a value, or absent.
type register struct {
	present bool
	value   string
}

// opInfo is an operation's Metadata, shown in the visualization.
type opInfo struct {
	index   int
	outcome string
}

// kvModel is the store's sequential specification, one register per key.
//
// An unknown cas is accepted with either outcome: where it is linearized with its condition
// holding it swaps, and a cas that never took effect is linearized after everything else (its
// return time is infinite), where its effect is seen by no one. Removing an operation without
// effect and moving it to the end are the same to every other operation, so a deterministic step
// checks exactly what a nondeterministic "applied or not" step would, without the power-set
// construction that porcupine's NondeterministicModel needs.
var kvModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() interface{} { return register{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in, out := state.(register), input.(kvInput), output.(kvOutput)
		switch in.kind {
		case opGet:
			return out.found == s.present && (!s.present || out.got == s.value), s
		case opPut:
			return true, register{present: true, value: in.value}
		case opDelete:
			return true, register{}
		default: // opCas
			holds := !s.present
			if !in.ifAbsent {
				holds = s.present && s.value == in.ifValue
			}
			if !out.unknown && out.swapped != holds {
				return false, s
			}
			if holds {
				return true, register{present: true, value: in.value}
			}
			return true, s
		}
	},
	Hash: func(state interface{}) uint64 {
		s := state.(register)
		if !s.present {
			return 0
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(s.value))
		return h.Sum64() | 1
	},
	DescribeOperation: describeOperation,
	DescribeState: func(state interface{}) string {
		if s := state.(register); s.present {
			return strconv.Quote(s.value)
		}
		return "absent"
	},
	DescribeOperationMetadata: func(info interface{}) string {
		if i, ok := info.(opInfo); ok {
			return fmt.Sprintf("op %d (%s)", i.index, i.outcome)
		}
		return ""
	},
}

// partitionByKey splits a history into one history per key: keys are independent registers, so
// the whole is linearizable if and only if each key's history is.
func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	var keys []string
	for _, op := range history {
		key := op.Input.(kvInput).key
		if _, seen := byKey[key]; !seen {
			keys = append(keys, key)
		}
		byKey[key] = append(byKey[key], op)
	}
	partitions := make([][]porcupine.Operation, 0, len(keys))
	for _, key := range keys {
		partitions = append(partitions, byKey[key])
	}
	return partitions
}

func describeOperation(input, output interface{}) string {
	in, out := input.(kvInput), output.(kvOutput)
	var call string
	switch in.kind {
	case opGet:
		call = fmt.Sprintf("get(%q)", in.key)
	case opPut:
		call = fmt.Sprintf("put(%q, %q)", in.key, in.value)
	case opDelete:
		call = fmt.Sprintf("delete(%q)", in.key)
	default:
		condition := "absent"
		if !in.ifAbsent {
			condition = strconv.Quote(in.ifValue)
		}
		call = fmt.Sprintf("cas(%q, %s → %q)", in.key, condition, in.value)
	}
	switch {
	case out.unknown:
		return call + " → ?"
	case in.kind == opGet && out.found:
		return call + " → " + strconv.Quote(out.got)
	case in.kind == opGet:
		return call + " → absent"
	case in.kind == opCas:
		return call + " → " + strconv.FormatBool(out.swapped)
	default:
		return call
	}
}

// history is what readHistory makes of a file: the operations to check, and how many keys they touch.
type history struct {
	ops  []porcupine.Operation
	keys int
}

// inputError is a history that cannot be read, with where in it.
type inputError struct {
	index int    // the op's index in "ops", or -1 for the document itself
	field string // the field at fault, if one is
	msg   string
}

func (e *inputError) Error() string {
	switch {
	case e.index < 0:
		return "history: " + e.msg
	case e.field == "":
		return fmt.Sprintf("ops[%d]: %s", e.index, e.msg)
	default:
		return fmt.Sprintf("ops[%d].%s: %s", e.index, e.field, e.msg)
	}
}

// opFields are the fields an op may have; readOp says which ops need which.
var opFields = map[string]bool{
	"client": true, "op": true, "key": true, "value": true, "ifValue": true, "call": true,
	"return": true, "outcome": true, "found": true, "got": true, "swapped": true,
}

func knownFields(fields map[string]json.RawMessage) bool {
	for name := range fields {
		if !opFields[name] {
			return false
		}
	}
	return true
}

// readHistory decodes and validates a history, drops the operations that had no effect, and gives
// the rest porcupine's shape.
func readHistory(data []byte) (*history, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, &inputError{index: -1, msg: "not a JSON object: " + err.Error()}
	} else if doc == nil {
		return nil, &inputError{index: -1, msg: "not a JSON object"}
	}
	for name := range doc {
		if name != "ops" {
			return nil, &inputError{index: -1, msg: fmt.Sprintf("unknown field %q (want only \"ops\")", name)}
		}
	}
	rawOps, present := doc["ops"]
	if !present {
		return nil, &inputError{index: -1, msg: "missing field \"ops\""}
	}
	// One pass decodes every op's fields; only when it fails is each op decoded alone, to say which.
	var ops []map[string]json.RawMessage
	if err := json.Unmarshal(rawOps, &ops); err != nil || ops == nil {
		var each []json.RawMessage
		if json.Unmarshal(rawOps, &each) != nil || each == nil {
			return nil, &inputError{index: -1, msg: "\"ops\" is not an array"}
		}
		for i, raw := range each {
			var fields map[string]json.RawMessage
			if json.Unmarshal(raw, &fields) != nil {
				return nil, &inputError{index: i, msg: "not a JSON object"}
			}
		}
		return nil, &inputError{index: -1, msg: fmt.Sprintf("\"ops\" cannot be read: %v", err)}
	}
	h := &history{}
	keys := map[string]struct{}{}
	for i, fields := range ops {
		op, keep, err := readOp(i, fields)
		if err != nil {
			return nil, err
		}
		if !keep {
			continue
		}
		keys[op.Input.(kvInput).key] = struct{}{}
		h.ops = append(h.ops, op)
	}
	h.keys = len(keys)
	return h, nil
}

// readOp reads ops[i], given as its fields. keep is false for an operation that cannot have had an
// effect: one that certainly failed, or a get whose answer never came.
func readOp(i int, fields map[string]json.RawMessage) (op porcupine.Operation, keep bool, err error) {
	if fields == nil {
		return op, false, &inputError{index: i, msg: "not a JSON object"}
	}
	if !knownFields(fields) {
		names := make([]string, 0, len(fields))
		for name := range fields {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if !opFields[name] {
				return op, false, &inputError{index: i, field: name, msg: "unknown field"}
			}
		}
	}
	bad := func(field, format string, args ...interface{}) error {
		return &inputError{index: i, field: field, msg: fmt.Sprintf(format, args...)}
	}
	str := func(field string) (string, error) {
		raw := fields[field]
		// The document was checked to be valid JSON: a string without escapes is its bytes.
		if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
			return string(raw[1 : n-1]), nil
		}
		var s string
		if e := json.Unmarshal(raw, &s); e != nil || string(raw) == "null" {
			return "", bad(field, "want a string, got %s", raw)
		}
		return s, nil
	}
	integer := func(field string) (int64, error) {
		n, e := strconv.ParseInt(string(fields[field]), 10, 64)
		if e != nil {
			return 0, bad(field, "want an integer, got %s", fields[field])
		}
		return n, nil
	}
	boolean := func(field string) (bool, error) {
		switch string(fields[field]) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return false, bad(field, "want true or false, got %s", fields[field])
	}
	has := func(field string) bool { _, ok := fields[field]; return ok }
	for _, field := range []string{"client", "op", "key", "call", "return", "outcome"} {
		if !has(field) {
			return op, false, bad(field, "missing")
		}
	}

	client, err := integer("client")
	if err != nil {
		return op, false, err
	}
	if client < 0 || client > math.MaxInt32 {
		return op, false, bad("client", "want an integer from 0 to %d, got %d", math.MaxInt32, client)
	}
	name, err := str("op")
	if err != nil {
		return op, false, err
	}
	kind, known := opNames[name]
	if !known {
		return op, false, bad("op", "want \"get\", \"put\", \"delete\" or \"cas\", got %q", name)
	}
	in := kvInput{kind: kind}
	if in.key, err = str("key"); err != nil {
		return op, false, err
	}
	outcome, err := str("outcome")
	if err != nil {
		return op, false, err
	}
	if outcome != "ok" && outcome != "fail" && outcome != "unknown" {
		return op, false, bad("outcome", "want \"ok\", \"fail\" or \"unknown\", got %q", outcome)
	}
	call, err := integer("call")
	if err != nil {
		return op, false, err
	}
	ret := call
	if string(fields["return"]) == "null" {
		if outcome != "unknown" {
			return op, false, bad("return", "null, but outcome is %q (only an unknown outcome may lack a return time)", outcome)
		}
	} else if ret, err = integer("return"); err != nil {
		return op, false, err
	} else if ret < call {
		return op, false, bad("return", "%d is before call %d", ret, call)
	}

	// Arguments: value for put and cas, ifValue for cas, nothing else.
	switch kind {
	case opPut, opCas:
		if !has("value") {
			return op, false, bad("value", "missing (%s needs it)", name)
		}
		if in.value, err = str("value"); err != nil {
			return op, false, err
		}
	default:
		if has("value") {
			return op, false, bad("value", "not an argument of %s", name)
		}
	}
	if kind == opCas {
		switch {
		case !has("ifValue"):
			return op, false, bad("ifValue", "missing (cas needs it: a string, or null for \"the key must be absent\")")
		case string(fields["ifValue"]) == "null":
			in.ifAbsent = true
		default:
			if in.ifValue, err = str("ifValue"); err != nil {
				return op, false, err
			}
		}
	} else if has("ifValue") {
		return op, false, bad("ifValue", "not an argument of %s", name)
	}

	// Results: only an ok get (found, and got when found) and an ok cas (swapped) have them.
	out := kvOutput{unknown: outcome == "unknown"}
	wantFound, wantSwapped := outcome == "ok" && kind == opGet, outcome == "ok" && kind == opCas
	switch {
	case wantFound:
		if !has("found") {
			return op, false, bad("found", "missing (an ok get needs it)")
		}
		if out.found, err = boolean("found"); err != nil {
			return op, false, err
		}
		if out.found && !has("got") {
			return op, false, bad("got", "missing (a get that found the key needs it)")
		}
		if !out.found && has("got") {
			return op, false, bad("got", "present, but found is false")
		}
		if out.found {
			if out.got, err = str("got"); err != nil {
				return op, false, err
			}
		}
	case has("found"), has("got"):
		field := "found"
		if !has("found") {
			field = "got"
		}
		return op, false, bad(field, "only an ok get has it (this is %s, outcome %q)", name, outcome)
	}
	if wantSwapped {
		if !has("swapped") {
			return op, false, bad("swapped", "missing (an ok cas needs it)")
		}
		if out.swapped, err = boolean("swapped"); err != nil {
			return op, false, err
		}
	} else if has("swapped") {
		return op, false, bad("swapped", "only an ok cas has it (this is %s, outcome %q)", name, outcome)
	}

	op = porcupine.Operation{
		ClientId: int(client),
		Input:    in,
		Call:     call,
		Output:   out,
		Return:   ret,
		Metadata: opInfo{index: i, outcome: outcome},
	}
	if out.unknown {
		op.Return = never
	}
	keep = outcome == "ok" || (outcome == "unknown" && kind != opGet)
	return op, keep, nil
}

// verdict is the one JSON line kvchecker prints.
type verdict struct {
	Linearizable bool `json:"linearizable"`
	Unknown      bool `json:"unknown"`
	Operations   int  `json:"operations"`
	Keys         int  `json:"keys"`
}

// run is kvchecker with its arguments and output streams; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("kvchecker", flag.ContinueOnError)
	flags.SetOutput(stderr)
	visualize := flags.String("visualize", "", "write an HTML visualization of the check to `file`")
	timeout := flags.Duration("timeout", 60*time.Second, "give up after this long and report \"unknown\" (0: no limit)")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvchecker [-visualize out.html] [-timeout 60s] history.json")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return exitBadInput
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return exitBadInput
	}
	data, err := os.ReadFile(flags.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "kvchecker:", err)
		return exitBadInput
	}
	h, err := readHistory(data)
	if err != nil {
		fmt.Fprintln(stderr, "kvchecker:", err)
		return exitBadInput
	}

	result, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, *timeout)
	if *visualize != "" {
		if err := porcupine.VisualizePath(kvModel, info, *visualize); err != nil {
			fmt.Fprintln(stderr, "kvchecker: writing the visualization:", err)
			return exitBadInput
		}
	}
	out := verdict{Linearizable: result == porcupine.Ok, Unknown: result == porcupine.Unknown, Operations: len(h.ops), Keys: h.keys}
	line, _ := json.Marshal(out)
	fmt.Fprintln(stdout, string(line))
	switch result {
	case porcupine.Ok:
		return exitLinearizable
	case porcupine.Unknown:
		return exitUnknown
	default:
		return exitNotLinearizable
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
