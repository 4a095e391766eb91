#!/usr/bin/env python3
"""Writes schemas.json: the 200 response schemas of the Atlassian operations grantry calls,
copied from Atlassian's published OpenAPI documents and turned into JSON Schema.

Usage: extract.py DIR > schemas.json, where DIR holds Atlassian's documents as published
(jira-cloud-platform-v3.json from developer.atlassian.com/cloud/jira/platform/swagger-v3.v3.json,
confluence-cloud-v1.json and confluence-cloud-v2.json from developer.atlassian.com/cloud/
confluence/swagger.v3.json and .../openapi-v2.v3.json).

OpenAPI 3.0 schemas become JSON Schema: component references point into `$defs`, and
`nullable: true` adds `null` to the allowed types.
"""

import json
import sys

# (document, method, path in the document, success status)
OPERATIONS = [
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/search/jql", "200"),
    ("jira-cloud-platform-v3.json", "post", "/rest/api/3/search/jql", "200"),
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/project/search", "200"),
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/issue/{issueIdOrKey}", "200"),
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/issue/{issueIdOrKey}/comment", "200"),
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/myself", "200"),
    ("jira-cloud-platform-v3.json", "get", "/rest/api/3/webhook", "200"),
    ("jira-cloud-platform-v3.json", "post", "/rest/api/3/webhook", "200"),
    ("jira-cloud-platform-v3.json", "put", "/rest/api/3/webhook/refresh", "200"),
    ("confluence-cloud-v1.json", "get", "/wiki/rest/api/search", "200"),
    ("confluence-cloud-v2.json", "get", "/spaces", "200"),
    ("confluence-cloud-v2.json", "get", "/spaces/{id}", "200"),
    ("confluence-cloud-v2.json", "get", "/spaces/{id}/pages", "200"),
    ("confluence-cloud-v2.json", "get", "/pages/{id}", "200"),
]


def convert(node):
    """An OpenAPI 3.0 schema node as JSON Schema."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/components/schemas/", "#/$defs/")
        elif key in ("nullable", "example", "discriminator", "xml", "externalDocs"):
            continue
        else:
            out[key] = convert(value)
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def references(node, found):
    """Every component name `node` refers to, directly."""
    if isinstance(node, list):
        for item in node:
            references(item, found)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.split("/")[-1])
        for value in node.values():
            references(value, found)


def main(folder):
    documents = {}
    out = {"operations": []}
    for document, method, path, status in OPERATIONS:
        if document not in documents:
            with open(f"{folder}/{document}", encoding="utf-8") as f:
                documents[document] = json.load(f)
        spec = documents[document]
        schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        components = spec["components"]["schemas"]
        needed, todo = set(), set()
        references(schema, todo)
        while todo:
            name = todo.pop()
            if name in needed:
                continue
            needed.add(name)
            references(components[name], todo)
        converted = convert(schema)
        converted["$defs"] = {name: convert(components[name]) for name in sorted(needed)}
        out["operations"].append({
            "document": document,
            "title": spec["info"]["title"],
            "version": spec["info"]["version"],
            "method": method.upper(),
            "path": path,
            "status": int(status),
            "schema": converted,
        })
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
