// Package dnstest builds DNS messages for tests: answers with the records
// a test gives, the questions and record headers they are made of.
package dnstest

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Response builds a DNS answer (transaction id 7) to questions qs with the
// records build adds (nil: none).
func Response(t testing.TB, qs []dnsmessage.Question, rcode dnsmessage.RCode, build func(b *dnsmessage.Builder) error) []byte {
	t.Helper()
	return ResponseID(t, 7, qs, rcode, build)
}

// ResponseID is Response with the transaction id of its query.
func ResponseID(t testing.TB, id uint16, qs []dnsmessage.Question, rcode dnsmessage.RCode, build func(b *dnsmessage.Builder) error) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	if build != nil {
		if err := build(&b); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// RR is the header of a record of name and type typ (class IN, TTL 60).
func RR(name string, typ dnsmessage.Type) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: 60}
}

// Question asks for name's records of type typ (class IN).
func Question(name string, typ dnsmessage.Type) dnsmessage.Question {
	return dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}
}
