"""Cleaning: whitespace, control characters, broken lines, blank lines, headers and footers."""

from rag.cleaning import clean_pages, clean_text, join_broken_lines, strip_headers_footers


def test_whitespace_and_control_characters():
    raw = "a\r\nb\rc\u3000d\xa0e\t\tf\x00g\x07h\u200bi\ufeffj\x0c"
    assert clean_text(raw) == "a\nb\nc d e fghij"


def test_chinese_punctuation_is_kept_as_is():
    text = "第一句。第二句！第三句？第四句；第五句：结束，好的"
    assert clean_text(text) == text


def test_lines_broken_inside_a_sentence_are_joined():
    text = (
        "Retrieval augmented generation combines a search index with a\n"
        "language model so that answers can cite their sources and stay\n"
        "grounded in documents."
    )
    assert clean_text(text) == (
        "Retrieval augmented generation combines a search index with a language model so "
        "that answers can cite their sources and stay grounded in documents."
    )


def test_hyphenated_line_ends_are_rejoined():
    text = (
        "The knowledge base keeps every docu-\nment version until the next snap-\n"
        "shot is written."
    )
    assert clean_text(text) == (
        "The knowledge base keeps every document version until the next snapshot is written."
    )


def test_cjk_lines_join_without_space_but_not_across_sentence_ends():
    text = (
        "北京是中华人民共和国的首都，也是全国的政治\n文化中心。上海是中国最大的经济中心城市之一\n"
        "也是国际化大都市。\n广州是华南地区的中心城市之一，历史悠久"
    )
    assert clean_text(text) == (
        "北京是中华人民共和国的首都，也是全国的政治文化中心。上海是中国最大的经济中心城市之一"
        "也是国际化大都市。\n广州是华南地区的中心城市之一，历史悠久"
    )


def test_titles_and_list_items_keep_their_line_breaks():
    block = (
        "Introduction\nThis paragraph was wrapped by the layout engine in the middle of\n"
        "- a list item\n- another item"
    )
    assert join_broken_lines(block).split("\n") == [
        "Introduction",
        "This paragraph was wrapped by the layout engine in the middle of",
        "- a list item",
        "- another item",
    ]


def test_blank_lines_collapse():
    assert clean_text("one.\n\n\n\n  \n\ntwo.\n\n\n") == "one.\n\ntwo."


BODIES = [
    "Revenue grew in the first quarter.",
    "Costs were cut across the board.",
    "The new plant opened in May.",
    "Hiring slowed in the autumn.",
    "Outlook for next year is stable.",
]


def test_repeated_headers_and_footers_are_dropped():
    pages = [
        f"ACME Corp — Internal\n{body} ACME Corp — Internal is named in the body.\n"
        f"{body.split()[0]} details follow.\nPage {n} of 5"
        for n, body in enumerate(BODIES, start=1)
    ]
    cleaned = strip_headers_footers(pages)
    for body, page in zip(BODIES, cleaned, strict=True):
        assert page.splitlines() == [
            f"{body} ACME Corp — Internal is named in the body.",
            f"{body.split()[0]} details follow.",
        ]


def test_headers_need_most_pages_and_at_least_three():
    two = ["Header\nbody one", "Header\nbody two"]
    assert strip_headers_footers(two) == two
    pages = ["Header\nbody one", "Other\nbody two", "Third\nbody three", "Fourth\nbody four"]
    assert strip_headers_footers(pages) == pages


def test_clean_pages_handles_chinese_headers():
    bodies = ["项目进展顺利，已完成设计。", "测试阶段发现了三个问题。", "上线时间定在下个月。"]
    pages = [f"公司内部资料 第{n}页\n{body}\n- {n} -" for n, body in enumerate(bodies, start=1)]
    assert clean_pages(pages) == bodies
