"""Tests of the corpus runner's pure parts: `python3 -m unittest discover bench/cedar-corpus`."""

import unittest

from run import (
    Outcome,
    attribute,
    authzen_body,
    cedar_string,
    judge,
    split_policies,
    stable_ids,
    features_of,
    unescape_cedar,
)


def request(decision="allow", reason=("policy0",), errors=(), ptype="User", pid="alice"):
    return {
        "principal": {"type": ptype, "id": pid},
        "action": {"type": "Action", "id": "view"},
        "resource": {"type": "Photo", "id": "p"},
        "context": {},
        "decision": decision,
        "reason": list(reason),
        "errors": list(errors),
    }


def answer(allow, policies, principal='User::"alice"', errors=(), generation=2):
    return {
        "decision": allow,
        "context": {
            "generation": generation,
            "reason": "",
            "evaluations": [
                {
                    "role": "user",
                    "principal": principal,
                    "decision": allow,
                    "policies": [{"id": p} for p in policies],
                    "errors": list(errors),
                }
            ],
        },
    }


IDS = ["policies.cedar:0", "policies.cedar:1", "named"]


class Spelling(unittest.TestCase):
    def test_cedar_strings_escape_quotes_backslashes_and_controls(self):
        self.assertEqual(cedar_string('a"b\\c'), 'a\\"b\\\\c')
        self.assertEqual(cedar_string("r'\n"), "r'\n")
        self.assertEqual(cedar_string("x\ny\t\0\x01'", "cedar"), "x\\ny\\t\\0\\u{1}\\'")
        self.assertEqual(cedar_string("é\u00a0\u0301", "cedar"), "é\\u{a0}\u0301")
        self.assertEqual(cedar_string("\u0301x", "cedar"), "\\u{301}x")
        for s in ['a"b\\c', "x\ny\t\0\x01", "é☃\u00a0'"]:
            for spelling in ("plain", "cedar"):
                self.assertEqual(unescape_cedar(cedar_string(s, spelling)), s)

    def test_the_action_is_a_full_uid_and_the_rest_passes_through(self):
        req = request()
        req["action"] = {"type": "N::Action", "id": 'say "hi"'}
        req["principal"] = {"type": "N::User", "id": ""}
        req["context"] = {"x": {"__entity": {"type": "N::User", "id": "b"}}}
        body = authzen_body(req)
        self.assertEqual(body["action"], {"name": 'N::Action::"say \\"hi\\""'})
        self.assertEqual(body["subject"], {"type": "N::User", "id": ""})
        self.assertEqual(body["context"], req["context"])
        self.assertEqual(body["options"], {"explain": True})
        del req["resource"]
        self.assertIn("no resource", authzen_body(req))


class PolicyIds(unittest.TestCase):
    def test_policies_are_split_outside_strings_and_comments(self):
        text = 'permit(principal, action, resource) when { "a;b" like "*;\\"" };\n// x; y\nforbid(principal, action, resource);'
        self.assertEqual(len(split_policies(text)), 2)

    def test_an_id_annotation_names_the_policy(self):
        text = (
            '@id("first")\npermit(principal, action, resource);\n'
            "permit(principal, action, resource);\n"
            '@other("x") @id("semi;colon\\u{e9}") forbid(principal, action, resource);\n'
            "@id permit(principal, action, resource);\n"
        )
        self.assertEqual(stable_ids(text), ["first", "policies.cedar:1", "semi;colon\u00e9", ""])


class Judging(unittest.TestCase):
    def test_same_decision_and_policies_agree(self):
        o = judge(request(reason=["policy0", "policy2"]), IDS, 2, 200, answer(True, ["named", "policies.cedar:0"]))
        self.assertEqual((o.cls, o.why), ("agree", "same"))

    def test_another_decision_disagrees(self):
        o = judge(request(decision="deny", reason=[]), IDS, 2, 200, answer(True, ["policies.cedar:0"]))
        self.assertEqual(o.cls, "disagree")
        self.assertTrue(o.why.startswith("decision"))

    def test_other_determining_policies_disagree(self):
        o = judge(request(reason=["policy1"]), IDS, 2, 200, answer(True, ["policies.cedar:0"]))
        self.assertEqual((o.cls, o.why), ("disagree", "determining policies"))
        o = judge(request(reason=["policy0"]), IDS, 2, 200, answer(True, ["policies.cedar:0", "unknown"]))
        self.assertEqual(o.cls, "disagree")
        self.assertIn("unmapped:unknown", o.detail)

    def test_errors_are_compared_by_policy(self):
        err = "error while evaluating policy `policies.cedar:1`: overflow"
        o = judge(request("deny", [], ["policy1"]), IDS, 2, 200, answer(False, [], errors=[err]))
        self.assertEqual((o.cls, o.why), ("agree", "same"))
        o = judge(request("deny", [], []), IDS, 2, 200, answer(False, [], errors=[err]))
        self.assertEqual((o.cls, o.why), ("agree", "errors differ"))

    def test_a_400_is_refused(self):
        o = judge(request(), IDS, 2, 400, {"error": {"status": 400, "message": "`subject.id` is empty"}})
        self.assertEqual((o.cls, o.why), ("refused", "bad request (400)"))
        o.tags = ["empty-entity-id", "cedar-builtin-type-names"]
        o.response = {"error": {}}
        self.assertEqual(attribute(o), "empty-entity-id")
        o = judge(request(), IDS, 2, 400, {"error": {"message": "keys `R` and `r`, which differ only in case"}})
        o.tags = ["cedar-builtin-type-names", "case-variant-keys"]
        o.response = {"error": {}}
        self.assertEqual(attribute(o), "case-variant-keys")
        # A policy set that did not load is not explained by a request feature.
        not_loaded = Outcome("refused", "policy set not loaded", "", ["mcp-context-names"])
        self.assertIsNone(attribute(not_loaded))

    def test_a_deny_before_evaluation_is_a_disagreement_only_where_cedar_allows(self):
        before = {"decision": False, "context": {"generation": 2, "reason": "context does not fit", "evaluations": []}}
        self.assertEqual(judge(request(), IDS, 2, 200, before).cls, "disagree")
        self.assertEqual(judge(request("deny", []), IDS, 2, 200, before).cls, "refused")

    def test_another_principal_or_generation_is_caught(self):
        o = judge(request(), IDS, 2, 200, answer(True, ["policies.cedar:0"], principal='N::User::"alice"'))
        self.assertEqual((o.cls, o.why), ("disagree", "another principal evaluated"))
        o = judge(request(), IDS, 3, 200, answer(True, ["policies.cedar:0"]))
        self.assertEqual(o.cls, "refused")

    def test_known_divergences_are_tagged_from_the_request(self):
        req = request(pid="")
        req["action"]["id"] = "r'"
        req["context"] = {"user": 1, "x": [{"R": 1, "r": 2}], "e": {"__entity": {"type": "A", "id": ""}}}
        self.assertEqual(
            features_of("type T = __cedar::Bool;", req),
            ["empty-entity-id", "cedar-builtin-type-names", "action-spelling", "mcp-context-names",
             "case-variant-keys", "context-entity"],
        )
        self.assertEqual(features_of("", request()), [])
        req = request(ptype="N::APPLICATION", pid='a"\x00')
        req["action"] = {"type": "N::Action", "id": "é"}
        self.assertEqual(
            features_of("", req),
            ["id-quote-or-backslash", "id-not-printable", "action-not-ascii", "namespaced", "application-subject"],
        )
        self.assertIsNone(attribute(Outcome("disagree", "x", "", [])))


if __name__ == "__main__":
    unittest.main()
