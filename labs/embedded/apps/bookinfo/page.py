"""The HTML of productpage's `/productpage` and `/`, with the markers learners and graders look
for: the title "Simple Bookstore App", the book, the details table, reviews with
`glyphicon glyphicon-star` spans inside `<font color="black|red">`, the error texts, and the
signed-in user."""

from __future__ import annotations

from html import escape
from typing import Any

PRODUCT = {
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": (
        '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
        "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his "
        "shortest and one of his most farcical comedies, with a major part of the humour coming "
        "from slapstick and mistaken identity, in addition to puns and word play."
    ),
}
DETAIL_FIELDS = (("ISBN-10", "ISBN-10"), ("Publisher", "publisher"), ("Pages", "pages"),
                 ("Type", "type"), ("Language", "language"))

_HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Simple Bookstore App</title>
</head>
<body>
"""
_LOGIN_FORM = """<dialog id="dialog">
  <h2>Sign in to BookInfo</h2>
  <form method="post" action='login' name="login_form">
    <label for="username">Username</label> <input id="username" name="username" required>
    <label for="password">Password</label>
    <input id="password" name="passwd" type="password" required>
    <button type="submit">Sign in</button>
  </form>
</dialog>
"""


def _nav(user: str) -> str:
    if user:
        right = (f'<span class="navbar-text">Welcome {escape(user)}</span>\n'
                 '        <a href="logout">Sign out</a>')
    else:
        right = '<button type="button" id="sign-in-button">Sign in</button>'
    return ('<nav class="navbar">\n  <a href="#" class="navbar-brand">BookInfo Sample</a>\n'
            f"  <div class=\"navbar-right\">\n        {right}\n  </div>\n</nav>\n")


def _details(status: int, details: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-center text-primary">Error fetching product details!</h4>\n'
                f"<p>{escape(str(details.get('error', '')))}</p>\n")
    head = "".join(f"<th>{name}</th>" for name, _ in DETAIL_FIELDS)
    cells = "".join(f"<td>{escape(str(details.get(key, '')))}</td>" for _, key in DETAIL_FIELDS)
    return ('<h4 class="text-center text-primary">Book Details</h4>\n<table class="table">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody><tr>{cells}</tr></tbody>\n</table>\n")


def _stars(rating: dict[str, Any]) -> str:
    if rating.get("stars"):
        stars = int(rating["stars"])
        full = '\n  <span class="glyphicon glyphicon-star"></span>' * stars
        empty = '\n  <span class="glyphicon glyphicon-star-empty"></span>' * (5 - stars)
        return f'<font color="{escape(str(rating.get("color", "")))}">{full}{empty}\n</font>\n'
    if rating.get("error"):
        return f"<p><i>{escape(str(rating['error']))}</i></p>\n"
    return ""


def _reviews(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-center text-primary">Error fetching product reviews!</h4>\n'
                f"<p>{escape(str(reviews.get('error', '')))}</p>\n")
    out = ['<h4 class="text-center text-primary">Book Reviews</h4>\n']
    served_by = escape(str(reviews.get("podname", "")))
    for review in reviews.get("reviews", []):
        rating = review.get("rating")
        out.append(f"<blockquote>\n<p>{escape(str(review.get('text', '')))}</p>\n"
                   f"<small>{escape(str(review.get('reviewer', '')))}</small>\n"
                   f"{_stars(rating) if isinstance(rating, dict) else ''}"
                   f'<div class="font-mono">Reviews served by: {served_by}</div>\n'
                   "</blockquote>\n")
    return "".join(out)


def product_page(user: str, details: tuple[int, dict[str, Any]],
                 reviews: tuple[int, dict[str, Any]]) -> str:
    """The whole `/productpage` document."""
    return (_HEAD + _nav(user) + ("" if user else _LOGIN_FORM)
            + '<div class="container-fluid">\n'
            + f'<h3 class="text-center text-primary">{PRODUCT["title"]}</h3>\n'
            + f"<p>Summary: {PRODUCT['descriptionHtml']}</p>\n"
            + f'<div class="col-md-6">\n{_details(*details)}</div>\n'
            + f'<div class="col-md-6">\n{_reviews(*reviews)}</div>\n'
            + "</div>\n</body>\n</html>\n")


def index_page(services: list[tuple[str, str]]) -> str:
    """`/`: what the app is made of and where to go next, like the real index."""
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{escape(url)}</td></tr>\n"
                   for name, url in services)
    return (_HEAD + "<h3>Hello! This is a simple bookstore application consisting of three "
            "services as shown below</h3>\n"
            f'<table class="table">\n<tr><th>name</th><th>endpoint</th></tr>\n{rows}</table>\n'
            "<p>Click on one of the links below to auto generate a request to the backend as a "
            "real user or a tester</p>\n"
            '<p><a href="/productpage?u=normal">Normal user</a></p>\n'
            '<p><a href="/productpage?u=test">Test user</a></p>\n</body>\n</html>\n')
