import pytest
import torch

from xsteer.transfer.layermap import (
    LAYER_MAPS,
    describe,
    explicit,
    from_cka,
    greedy,
    greedy_from_end,
    make_layer_map,
    proportional,
    validate_layer_map,
)

SHAPES = [(18, 30), (28, 18)]  # (n_parent, n_child): child deeper, child shallower


def _cka(n_parent, n_child):
    # A peaked matrix whose argmax is the proportional layer, so "cka" is checkable.
    target = proportional(n_parent, n_child)
    p = torch.arange(n_parent, dtype=torch.float64)
    return torch.stack([-(p - target[c]).abs() for c in range(n_child)])


@pytest.mark.parametrize("n_parent,n_child", SHAPES)
@pytest.mark.parametrize("name", LAYER_MAPS)
def test_every_map_is_valid(name, n_parent, n_child):
    layer_map = make_layer_map(name, n_parent, n_child, cka=_cka(n_parent, n_child), mapping="0:0,-1:-1")
    validate_layer_map(layer_map, n_parent, n_child)
    assert layer_map, name
    assert all(0 <= c < n_child and 0 <= p < n_parent for c, p in layer_map.items())


def test_greedy():
    m = greedy(18, 30)
    assert m == {i: i for i in range(18)}
    assert all(c not in m for c in range(18, 30))  # deeper child layers unsteered
    assert greedy(28, 18) == {i: i for i in range(18)}


def test_greedy_from_end():
    m = greedy_from_end(18, 30)
    assert len(m) == 18 and m[29] == 17 and m[12] == 0
    assert all(c not in m for c in range(12))
    m = greedy_from_end(28, 18)
    assert m == {c: c + 10 for c in range(18)}


@pytest.mark.parametrize("n_parent,n_child", SHAPES)
def test_proportional_endpoints_and_monotone(n_parent, n_child):
    m = proportional(n_parent, n_child)
    assert sorted(m) == list(range(n_child))
    assert m[0] == 0 and m[n_child - 1] == n_parent - 1
    values = [m[c] for c in range(n_child)]
    assert values == sorted(values)


def test_proportional_rounds_half_up():
    # 3 parent layers onto 5 child layers: i * 2/4 = 0, .5, 1, 1.5, 2
    assert proportional(3, 5) == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2}
    # banker's rounding would give round(0.5) == 0 and round(2.5) == 2
    assert proportional(6, 3) == {0: 0, 1: 3, 2: 5}  # 2.5 -> 3


def test_proportional_degenerate():
    assert proportional(18, 1) == {0: 17}
    assert proportional(1, 4) == {0: 0, 1: 0, 2: 0, 3: 0}
    assert proportional(7, 7) == {i: i for i in range(7)}


def test_from_cka_argmax_and_ties():
    cka = torch.tensor([[0.1, 0.9, 0.2], [0.5, 0.5, 0.1]])
    assert from_cka(cka) == {0: 1, 1: 0}
    assert make_layer_map("cka", 18, 30, cka=_cka(18, 30)) == proportional(18, 30)


def test_from_cka_rejects_nan():
    with pytest.raises(ValueError, match=r"child layers \[1\]"):
        from_cka(torch.tensor([[0.1, 0.2], [float("nan"), 0.3]]))


def test_explicit_string_and_mapping():
    assert explicit("0:0, 1:2,5:-1", 18, 30) == {0: 0, 1: 2, 5: 17}
    assert explicit({-1: 3, 2: 2}, 18, 30) == {2: 2, 29: 3}
    assert explicit("", 18, 30) == {}


@pytest.mark.parametrize(
    "mapping,match",
    [
        ("0:18", r"parent layer 18 is out of range: valid parent layers are 0\.\.17"),
        ("30:0", r"child layer 30 is out of range: valid child layers are 0\.\.29"),
        ("-31:0", r"child layer -31 is out of range"),
        ("0:0,-30:1", r"mapped twice"),
        ("0-1", r"expected 'child:parent'"),
        ({0: 1.5}, r"not an int"),
    ],
)
def test_explicit_errors(mapping, match):
    with pytest.raises(ValueError, match=match):
        make_layer_map("explicit", 18, 30, mapping=mapping)


def test_make_layer_map_errors():
    with pytest.raises(
        ValueError, match="options: greedy, greedy_from_end, proportional, cka, cka_diff, explicit"
    ):
        make_layer_map("nearest", 18, 30)
    with pytest.raises(ValueError, match="needs cka="):
        make_layer_map("cka", 18, 30)
    with pytest.raises(ValueError, match="needs mapping="):
        make_layer_map("explicit", 18, 30)
    with pytest.raises(ValueError, match=r"child layer 18 is out of range: valid child layers are 0\.\.17"):
        make_layer_map("cka", 28, 18, cka=torch.zeros(30, 28))
    with pytest.raises(ValueError, match=r"parent layer 28 is out of range: valid parent layers are 0\.\.27"):
        make_layer_map("cka", 28, 18, cka=torch.zeros(18, 40))
    with pytest.raises(ValueError, match="transposed"):
        make_layer_map("cka", 28, 18, cka=torch.zeros(18, 10))
    with pytest.raises(ValueError, match="n_child must be a positive int"):
        make_layer_map("greedy", 18, 0)


def test_validate_layer_map():
    validate_layer_map({0: 0, 29: 17}, 18, 30)
    with pytest.raises(ValueError, match=r"parent layer 18 is out of range: valid parent layers are 0\.\.17"):
        validate_layer_map({0: 18}, 18, 30)
    with pytest.raises(ValueError, match=r"child layer -1 is out of range"):
        validate_layer_map({-1: 0}, 18, 30)


def test_describe():
    assert describe({1: 2, 0: 0}) == "c0<-p0, c1<-p2"
    assert describe({}) == "(none)"
