import pytest

from rar_lite.data import normalize


@pytest.mark.parametrize(("catalogue", "display"), [
    ("Usual Suspects, The", "The Usual Suspects"),
    ("Misérables, Les", "Les Misérables"),
    ("Avventura, L'", "L'Avventura"),
    ("Abuelo, El", "El Abuelo"),
    ("Name of the Rose, The (Name der Rose, Der)", "The Name of the Rose"),
    ("Seven (a.k.a. Se7en)", "Seven"),
    ("Amants de Montparnasse (Montparnasse 19), Les", "Les Amants de Montparnasse"),
    ("Crouching Tiger, Hidden Dragon (Wo hu cang long)", "Crouching Tiger, Hidden Dragon"),
    ("I, Robot", "I, Robot"),
    ("(Haru)", "Haru"),
    ("Toy Story", "Toy Story"),
])
def test_display_title(catalogue: str, display: str) -> None:
    assert normalize.display_title(catalogue) == display


@pytest.mark.parametrize(("title", "key"), [
    ("The Usual Suspects", "usual suspects"),
    ("Usual Suspects, The", "usual suspects"),
    ("usual suspects", "usual suspects"),
    ("Les Misérables", "miserables"),
    ("Misérables, Les", "miserables"),
    ("Dumb & Dumber", "dumb and dumber"),
    ("Dumb and Dumber", "dumb and dumber"),
    ("L'Avventura", "avventura"),
    ("Avventura, L'", "avventura"),
    ("Schindler's List", "schindlers list"),
    ("Schindler’s List", "schindlers list"),
    ("Léon: The Professional", "leon the professional"),
    ("Star Wars: Episode IV - A New Hope", "star wars episode iv a new hope"),
    ("A Beautiful Mind", "beautiful mind"),
    ("Das Boot", "boot"),
    ("Boot, Das", "boot"),
    ("El Mariachi", "mariachi"),
    ("  Heat  ", "heat"),
    ("HEAT!", "heat"),
    ("The", "the"),  # a title that is only an article keeps it
    ("I, Robot", "i robot"),  # "I" is not dropped: it would merge "I, Robot" and "Robot"
    ("", ""),
])
def test_normalize_title(title: str, key: str) -> None:
    assert normalize.normalize_title(title) == key


def test_keep_article() -> None:
    assert normalize.normalize_title("The Terminator", keep_article=True) == "the terminator"


@pytest.mark.parametrize(("title", "keys"), [
    ("Seven (a.k.a. Se7en)", ["seven", "se7en"]),
    ("Amelie (Fabuleux destin d'Amélie Poulain, Le)", ["amelie", "fabuleux destin damelie poulain"]),
    ("Dumb & Dumber (Dumb and Dumber)", ["dumb and dumber"]),  # duplicates removed
    ("Léon: The Professional (a.k.a. The Professional) (Léon)",
     ["leon the professional", "professional", "leon"]),
    ("Twelve Monkeys (a.k.a. 12 Monkeys)", ["twelve monkeys", "12 monkeys"]),
    ("", []),
])
def test_title_keys(title: str, keys: list[str]) -> None:
    assert normalize.title_keys(title) == keys


def test_strip_accents() -> None:
    assert normalize.strip_accents("Amélie Poulain, Crónicas, Rashômon") == \
        "Amelie Poulain, Cronicas, Rashomon"


@pytest.mark.parametrize(("title", "key"), [
    ("Star Wars: Episode IV - A New Hope", "star wars"),
    ("Highlander III: The Sorcerer", "highlander iii"),
    ("Heat", None),
    ("Up: A Story", None),  # too short a head to be trusted
])
def test_colon_prefix_key(title: str, key: str | None) -> None:
    assert normalize.colon_prefix_key(title) == key
