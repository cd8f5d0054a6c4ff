// Tests of kvchecker on small hand-built histories, on bad input, and on a generated 10,000-op one.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// hop is one op of a history, as the JSON has it.
type hop map[string]any

func put(client int, key, value string, call, ret int64) hop {
	return hop{"client": client, "op": "put", "key": key, "value": value, "call": call, "return": ret, "outcome": "ok"}
}

func del(client int, key string, call, ret int64) hop {
	return hop{"client": client, "op": "delete", "key": key, "call": call, "return": ret, "outcome": "ok"}
}

func get(client int, key, got string, call, ret int64) hop {
	return hop{"client": client, "op": "get", "key": key, "call": call, "return": ret, "outcome": "ok", "found": true, "got": got}
}

func getAbsent(client int, key string, call, ret int64) hop {
	return hop{"client": client, "op": "get", "key": key, "call": call, "return": ret, "outcome": "ok", "found": false}
}

// cas with ifValue nil means "the key must be absent".
func cas(client int, key string, ifValue any, value string, swapped bool, call, ret int64) hop {
	return hop{"client": client, "op": "cas", "key": key, "ifValue": ifValue, "value": value, "call": call, "return": ret, "outcome": "ok", "swapped": swapped}
}

// unknown is h without an answer: it timed out, or its server crashed.
func (h hop) unknown() hop {
	u := h.without("found", "got", "swapped")
	u["outcome"], u["return"] = "unknown", nil
	return u
}

// failed is h certainly without effect.
func (h hop) failed() hop {
	f := h.without("found", "got", "swapped")
	f["outcome"] = "fail"
	return f
}

func (h hop) without(fields ...string) hop {
	c := hop{}
	for k, v := range h {
		c[k] = v
	}
	for _, f := range fields {
		delete(c, f)
	}
	return c
}

func (h hop) with(field string, value any) hop {
	c := h.without()
	c[field] = value
	return c
}

type outcome struct {
	code    int
	verdict verdict
	stderr  string
}

// check runs kvchecker on a history of ops, with extra flags before the file.
func check(t *testing.T, ops []hop, flags ...string) outcome {
	t.Helper()
	data, err := json.Marshal(map[string]any{"ops": ops})
	if err != nil {
		t.Fatal(err)
	}
	return checkRaw(t, data, flags...)
}

func checkRaw(t *testing.T, data []byte, flags ...string) outcome {
	t.Helper()
	file := filepath.Join(t.TempDir(), "history.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(append(flags, file), &stdout, &stderr)
	o := outcome{code: code, stderr: stderr.String()}
	if code != exitBadInput {
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("want one line on stdout, got %q", stdout.String())
		}
		if err := json.Unmarshal([]byte(lines[0]), &o.verdict); err != nil {
			t.Fatalf("stdout is not the verdict: %v: %q", err, lines[0])
		}
	}
	return o
}

func expectVerdict(t *testing.T, got outcome, linearizable bool, operations, keys int) {
	t.Helper()
	want := verdict{Linearizable: linearizable, Operations: operations, Keys: keys}
	code := exitLinearizable
	if !linearizable {
		code = exitNotLinearizable
	}
	if got.code != code || got.verdict != want {
		t.Fatalf("want exit %d with %+v, got exit %d with %+v (stderr %q)", code, want, got.code, got.verdict, got.stderr)
	}
}

func TestConcurrentHistoryIsLinearizable(t *testing.T) {
	ops := []hop{
		put(0, "x", "1", 0, 10),
		getAbsent(1, "x", 2, 4), // before both puts took effect
		put(1, "x", "2", 6, 8),  // concurrent with put 1, and takes effect first
		get(2, "x", "1", 5, 12), // so put 1 is the last write
		get(2, "x", "1", 13, 14),
		put(3, "y", "a", 0, 3),
		get(0, "y", "a", 11, 12),
		del(3, "y", 4, 20),
		getAbsent(0, "y", 21, 22),
	}
	expectVerdict(t, check(t, ops), true, 9, 2)
}

func TestStaleReadIsNotLinearizable(t *testing.T) {
	ops := []hop{
		put(0, "x", "1", 0, 1),
		put(1, "x", "2", 2, 3),
		get(2, "x", "1", 4, 5), // put 2 had returned before this get was called
	}
	html := filepath.Join(t.TempDir(), "stale.html")
	expectVerdict(t, check(t, ops, "-visualize", html), false, 3, 1)
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("<html")) || !bytes.Contains(page, []byte(`get(\"x\") → \"1\"`)) {
		t.Fatalf("the visualization does not show the history: %.200s…", page)
	}
	// The same read, concurrent with the second put, is fine.
	ops[2] = get(2, "x", "1", 2, 5)
	expectVerdict(t, check(t, ops), true, 3, 1)
}

func TestDeletedKeyIsAbsent(t *testing.T) {
	ops := []hop{put(0, "x", "1", 0, 1), del(0, "x", 2, 3), get(1, "x", "1", 4, 5)}
	expectVerdict(t, check(t, ops), false, 3, 1)
	ops[2] = getAbsent(1, "x", 4, 5)
	expectVerdict(t, check(t, ops), true, 3, 1)
}

func TestUnknownPutMayHaveApplied(t *testing.T) {
	before := []hop{put(0, "x", "1", 0, 1), put(1, "x", "2", 2, 3).unknown()}
	cases := []struct {
		name         string
		reads        []hop
		linearizable bool
	}{
		{"applied", []hop{get(2, "x", "2", 10, 11)}, true},
		{"not applied", []hop{get(2, "x", "1", 10, 11)}, true},
		{"applied late", []hop{get(2, "x", "1", 10, 11), get(2, "x", "2", 12, 13)}, true},
		{"applied, then undone by nothing", []hop{get(2, "x", "2", 10, 11), get(2, "x", "1", 12, 13)}, false},
		{"applied before its call", []hop{get(2, "x", "2", 0, 1)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := append(append([]hop{}, before...), c.reads...)
			expectVerdict(t, check(t, ops), c.linearizable, len(ops), 1)
		})
	}
}

func TestFailedOpsAreDropped(t *testing.T) {
	ops := []hop{
		put(0, "x", "1", 0, 1),
		put(1, "x", "2", 2, 3).failed(),
		getAbsent(2, "y", 0, 1).failed(),
		get(2, "x", "9", 0, 1).unknown(), // an unknown read tells nothing either
		get(2, "x", "2", 10, 11),
	}
	expectVerdict(t, check(t, ops), false, 2, 1)
	ops[4] = get(2, "x", "1", 10, 11)
	expectVerdict(t, check(t, ops), true, 2, 1)
}

func TestCasLostUpdateIsNotLinearizable(t *testing.T) {
	// Two increments from 0 both report a swap: one of them was lost.
	ops := []hop{
		put(0, "n", "0", 0, 1),
		cas(1, "n", "0", "1", true, 2, 5),
		cas(2, "n", "0", "1", true, 3, 6),
		get(0, "n", "1", 7, 8),
	}
	expectVerdict(t, check(t, ops), false, 4, 1)
	// One of them failing its comparison is the linearizable version.
	ops[2] = cas(2, "n", "0", "1", false, 3, 6)
	expectVerdict(t, check(t, ops), true, 4, 1)
	// A swap that did not report one is not.
	ops[1] = cas(1, "n", "0", "1", false, 2, 5)
	expectVerdict(t, check(t, ops), false, 4, 1)
}

func TestCasOnAbsentKey(t *testing.T) {
	ops := []hop{
		cas(0, "k", nil, "a", true, 0, 1),
		cas(1, "k", nil, "b", false, 2, 3),
		get(1, "k", "a", 4, 5),
	}
	expectVerdict(t, check(t, ops), true, 3, 1)
	ops[1] = cas(1, "k", nil, "b", true, 2, 3)
	expectVerdict(t, check(t, ops), false, 3, 1)
}

func TestUnknownCasAcceptsBothOutcomes(t *testing.T) {
	before := []hop{put(0, "x", "a", 0, 1), cas(1, "x", "a", "b", true, 2, 3).unknown()}
	cases := []struct {
		name         string
		reads        []hop
		linearizable bool
	}{
		{"swapped", []hop{get(2, "x", "b", 10, 11)}, true},
		{"not swapped though its condition held", []hop{get(2, "x", "a", 10, 11)}, true},
		{"swapped between two reads", []hop{get(2, "x", "a", 10, 11), get(2, "x", "b", 12, 13)}, true},
		{"swapped twice", []hop{get(2, "x", "b", 10, 11), put(2, "x", "a", 12, 13), get(2, "x", "b", 14, 15)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := append(append([]hop{}, before...), c.reads...)
			expectVerdict(t, check(t, ops), c.linearizable, len(ops), 1)
		})
	}
}

func TestEmptyHistory(t *testing.T) {
	expectVerdict(t, check(t, []hop{}), true, 0, 0)
}

func TestBadInputNamesTheOpAndField(t *testing.T) {
	ok := put(0, "x", "1", 0, 1)
	cases := []struct {
		name string
		op   hop
		want string
	}{
		{"missing field", ok.without("key"), "ops[1].key: missing"},
		{"unknown field", ok.with("ifvalue", "1"), "ops[1].ifvalue: unknown field"},
		{"bad op", ok.with("op", "append"), "ops[1].op: want \"get\", \"put\", \"delete\" or \"cas\""},
		{"bad outcome", ok.with("outcome", "timeout"), "ops[1].outcome: want"},
		{"no return", ok.with("return", nil), "ops[1].return: null, but outcome is \"ok\""},
		{"return before call", ok.with("call", 5), "ops[1].return: 1 is before call 5"},
		{"fractional time", ok.with("call", 0.5), "ops[1].call: want an integer, got 0.5"},
		{"negative client", ok.with("client", -1), "ops[1].client: want an integer from 0"},
		{"value of a get", getAbsent(0, "x", 0, 1).with("value", "1"), "ops[1].value: not an argument of get"},
		{"put without value", ok.without("value"), "ops[1].value: missing"},
		{"cas without ifValue", cas(0, "x", nil, "1", true, 0, 1).without("ifValue"), "ops[1].ifValue: missing"},
		{"ifValue of a put", ok.with("ifValue", nil), "ops[1].ifValue: not an argument of put"},
		{"get without found", get(0, "x", "1", 0, 1).without("found"), "ops[1].found: missing"},
		{"got, but not found", getAbsent(0, "x", 0, 1).with("got", "1"), "ops[1].got: present, but found is false"},
		{"found, but no got", get(0, "x", "1", 0, 1).without("got"), "ops[1].got: missing"},
		{"result of a put", ok.with("swapped", true), "ops[1].swapped: only an ok cas has it"},
		{"result of an unknown get", get(0, "x", "1", 0, 1).with("outcome", "unknown"), "ops[1].found: only an ok get has it"},
		{"cas without swapped", cas(0, "x", "0", "1", true, 0, 1).without("swapped"), "ops[1].swapped: missing"},
		{"string client", ok.with("client", "0"), "ops[1].client: want an integer"},
		{"number key", ok.with("key", 7), "ops[1].key: want a string, got 7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := check(t, []hop{ok, c.op})
			if got.code != exitBadInput || !strings.Contains(got.stderr, c.want) {
				t.Fatalf("want exit 2 with %q on stderr, got exit %d with %q", c.want, got.code, got.stderr)
			}
		})
	}
	for _, doc := range []struct{ data, want string }{
		{`[]`, "history: not a JSON object"},
		{`{}`, `history: missing field "ops"`},
		{`{"ops":null}`, `history: "ops" is not an array`},
		{`{"ops":[],"meta":1}`, `history: unknown field "meta"`},
		{`{"ops":[7]}`, "ops[0]: not a JSON object"},
	} {
		got := checkRaw(t, []byte(doc.data))
		if got.code != exitBadInput || !strings.Contains(got.stderr, doc.want) {
			t.Fatalf("%s: want exit 2 with %q on stderr, got exit %d with %q", doc.data, doc.want, got.code, got.stderr)
		}
	}
	if got := checkRaw(t, []byte(`{"ops":[]}`), "-timeout", "soon"); got.code != exitBadInput {
		t.Fatalf("a bad flag: want exit 2, got %d", got.code)
	}
}

// generated is a history of a linearizable store, simulated: each op takes effect at a point
// within its interval, chosen at random, and gets the answer the store has then.
type generated struct {
	ops []hop
	// point is each op's linearization point; value is each write's value, unique per write.
	point []int64
}

// generate makes n ops by `clients` clients on `keys` keys, seeded; ~3% of the writes have an
// unknown outcome (half of them took effect) and ~2% of all ops failed.
func generate(seed int64, n, clients, keys int) generated {
	rng := rand.New(rand.NewSource(seed))
	g := generated{ops: make([]hop, n), point: make([]int64, n)}
	cursor := make([]int64, clients)
	applies := make([]bool, n)
	lastValue := map[string]string{}
	for i := 0; i < n; i++ {
		c := i % clients
		call := cursor[c] + rng.Int63n(5)
		ret := call + 1 + rng.Int63n(50)
		cursor[c] = ret + 1
		g.point[i] = call + rng.Int63n(ret-call+1)
		key := fmt.Sprintf("k%d", rng.Intn(keys))
		value := fmt.Sprintf("v%d", i)
		var op hop
		switch r := rng.Intn(10); {
		case r < 4:
			op = hop{"op": "get"}
		case r < 7:
			op = hop{"op": "put", "value": value}
		case r < 8:
			op = hop{"op": "delete"}
		default:
			var ifValue any
			if last, ok := lastValue[key]; ok && rng.Intn(4) > 0 {
				ifValue = last
			}
			op = hop{"op": "cas", "ifValue": ifValue, "value": value}
		}
		if op["value"] != nil {
			lastValue[key] = value
		}
		op["client"], op["key"], op["call"], op["return"], op["outcome"] = c, key, call, ret, "ok"
		applies[i] = true
		switch r := rng.Intn(100); {
		case r < 2:
			op["outcome"], applies[i] = "fail", false
		case r < 5 && op["op"] != "get":
			op["outcome"], op["return"], applies[i] = "unknown", nil, rng.Intn(2) == 0
		}
		g.ops[i] = op
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return g.point[order[a]] < g.point[order[b]] })
	state := map[string]string{}
	for _, i := range order {
		op, key := g.ops[i], g.ops[i]["key"].(string)
		current, present := state[key]
		switch op["op"] {
		case "get":
			if op["outcome"] == "ok" {
				op["found"] = present
				if present {
					op["got"] = current
				}
			}
		case "put":
			if applies[i] {
				state[key] = op["value"].(string)
			}
		case "delete":
			if applies[i] {
				delete(state, key)
			}
		case "cas":
			ifValue, _ := op["ifValue"].(string)
			holds := !present
			if op["ifValue"] != nil {
				holds = present && current == ifValue
			}
			if op["outcome"] == "ok" {
				op["swapped"] = holds
			}
			if holds && applies[i] {
				state[key] = op["value"].(string)
			}
		}
	}
	return g
}

// staleRead makes one get of g read a value overwritten before the get was called: a write p
// returned, then a write q was called and returned, then the get was called, and reads p's value.
func (g generated) staleRead() (int, bool) {
	for i := len(g.ops) / 2; i < len(g.ops); i++ {
		r := g.ops[i]
		if r["op"] != "get" || r["found"] != true {
			continue
		}
		for q := i - 1; q >= 0; q-- {
			if !g.isOkWrite(q, r["key"]) || g.ops[q]["return"].(int64) >= r["call"].(int64) {
				continue
			}
			for p := q - 1; p >= 0; p-- {
				if g.isOkWrite(p, r["key"]) && g.ops[p]["return"].(int64) < g.ops[q]["call"].(int64) && g.ops[p]["value"] != r["got"] {
					r["got"] = g.ops[p]["value"]
					return i, true
				}
			}
		}
	}
	return 0, false
}

// isOkWrite says whether op i is a put, or a cas that swapped, on key, with an ok outcome.
func (g generated) isOkWrite(i int, key any) bool {
	op := g.ops[i]
	return op["key"] == key && op["outcome"] == "ok" && (op["op"] == "put" || op["swapped"] == true)
}

// TestGenerated10kOps checks a simulated 10,000-op history of 8 clients on 50 keys, the same with
// too short a timeout, and with one stale read; `go test -v -run 10k` prints the times.
func TestGenerated10kOps(t *testing.T) {
	g := generate(1, 10_000, 8, 50)
	checked := 0
	for _, op := range g.ops {
		if op["outcome"] == "ok" || (op["outcome"] == "unknown" && op["op"] != "get") {
			checked++
		}
	}
	start := time.Now()
	expectVerdict(t, check(t, g.ops), true, checked, 50)
	t.Logf("linearizable: %d ops (%d checked) in %v", len(g.ops), checked, time.Since(start))

	// A check takes milliseconds here, so a 1 ns timeout ends it first: no verdict, exit 3.
	if got := check(t, g.ops, "-timeout", "1ns"); got.code != exitUnknown || got.verdict != (verdict{Unknown: true, Operations: checked, Keys: 50}) {
		t.Fatalf("with a 1 ns timeout: want exit 3 with unknown, got exit %d with %+v", got.code, got.verdict)
	}

	i, ok := g.staleRead()
	if !ok {
		t.Fatal("the generated history has no read to make stale")
	}
	start = time.Now()
	expectVerdict(t, check(t, g.ops), false, checked, 50)
	t.Logf("stale read at op %d: not linearizable, in %v", i, time.Since(start))
}
