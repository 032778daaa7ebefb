"""Docs that state facts: the weights table against open_clip's release URLs, citations of published
numbers, links between the docs, the licence."""
import json
import os.path as osp
import re

import open_clip

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def read(*parts):
    with open(osp.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def test_weights_table_matches_the_release_urls_and_their_checksums():
    rows = re.findall(r"^\| `([^`]+)` \| (https://\S+) \| `([0-9a-f]{64})` \|$", read("docs", "weights.md"), re.M)
    assert {name for name, _, _ in rows} >= {"RN50", "RN101", "ViT-B/32", "ViT-B/16", "ViT-L/14"}
    for name, url, sha256 in rows:
        assert url.split("/")[-2] == sha256  # OpenAI's URLs embed the file's SHA-256
        arch = {"ViT-L/14@336px": "ViT-L-14-336"}.get(name, name.replace("/", "-"))
        assert open_clip.get_pretrained_url(arch, "openai") == url, name


def test_published_numbers_cite_papers_and_repositories_not_files():
    text = read("results", "published.json")
    assert not re.search(r"\.md\b|seeds/|shared/|specs/", text)
    sources = json.loads(text)["sources"]
    assert sources and all({"for", "title", "venue", "table"} <= set(source) for source in sources)


def test_readme_links_to_docs_that_exist():
    readme = read("README.md")
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md|LICENSE)\)", readme)
    for doc in ("docs/weights.md", "docs/compute.md", "docs/output.md", "docs/adding_a_method.md", "LICENSE"):
        assert doc in links, doc
    for link in links:
        assert osp.isfile(osp.join(REPO, link)), link
    assert read("LICENSE").startswith("MIT License")
