"""Response features: covariates, coherence statistics, representations, fitted transforms (LEACE)."""

import zlib

import numpy as np
import pytest
import torch

from vrm_pyro import ConfigError, EncoderConfig
from vrm_pyro.covariates import (
    BAG_STATISTICS,
    COHERENCE_STATISTICS,
    DISCOURSE_STATISTICS,
    ORDER_STATISTICS,
    bag_pieces,
    bag_sentences,
    bag_statistics,
    closed_last_line_statistics,
    coherence_statistics,
    copy_statistics,
    discourse_statistics,
    ending_statistics,
    last_line_statistics,
    nuisance_covariates,
    order_statistics,
    overlap_statistics,
    repeat_statistics,
)
from vrm_pyro.hacking import make_junk
from vrm_pyro.representations import (
    MAX_SENTENCES,
    column_names,
    feature_orientation,
    parse_representation,
    part_columns,
    representation_dim,
    response_features,
    sentence_bag,
    sentence_flow,
    sentence_order,
    sentences,
)
from vrm_pyro.transforms import FeatureTransform


def test_nuisance_covariates_are_log2_counts():
    text = "# Title\n\n- **one** item\n- two\n1. three\n\n```py\nx = 1\n```\n__bold__ end."
    phi = nuisance_covariates([text, "plain"], "length,list_items,headers,code_blocks,bold")
    tokens = len(__import__("re").findall(r"\w+|[^\w\s]", text))
    assert phi[0].tolist() == pytest.approx([np.log2(1 + tokens), np.log2(4), np.log2(2), np.log2(2), np.log2(3)])
    assert phi[1].tolist() == pytest.approx([1.0, 0, 0, 0, 0])
    assert nuisance_covariates(["x"], "").shape == (1, 0)
    with pytest.raises(ConfigError, match="unknown nuisance covariate"):
        nuisance_covariates(["x"], "length,colour")


def test_coherence_statistics_see_repetition_echo_and_truncation():
    prompt = "Describe the water cycle of planet earth"
    real = "Water evaporates from the oceans. It condenses into clouds. Then it falls as rain."
    stats = coherence_statistics([prompt] * 4, [real, "\n\n".join([real] * 5), prompt, real[:30]])
    s = dict(zip(COHERENCE_STATISTICS, stats.T))
    assert s["repeated_4grams"][0] == 0 and s["repeated_4grams"][1] > 0.75
    assert s["distinct_words"][1] < s["distinct_words"][0] / 3
    assert s["compression_ratio"][1] < s["compression_ratio"][0] / 2
    assert s["prompt_echo"][2] == 1.0 and s["prompt_echo"][0] == 0.0
    assert s["clean_ending"].tolist() == [1, 1, 0, 0]  # the prompt has no closing stop; the cut is mid-word
    assert 0 < s["prompt_coverage"][0] < 1 and s["prompt_coverage"][2] == 1.0


def test_prompt_copy_tells_the_prompt_echoed_back_from_a_rewrite_of_a_sentence_it_quotes():
    prompt = ("You should capitalize the sentence according to the guide. Guide: every other letter alternates "
              "between lower case and upper case. Sentence: a giant spider blocks your path.")
    rewrite, echo, answer = "A giant spider blocks Your path.", prompt, "Spiders are arachnids with eight legs."
    echoed = dict(zip(COHERENCE_STATISTICS, coherence_statistics([prompt] * 2, [rewrite, echo]).T))["prompt_echo"]
    assert echoed.tolist() == [1.0, 1.0]  # the response's side cannot tell them apart
    copied = copy_statistics([prompt] * 3, [rewrite, echo, answer])[:, 0]
    assert copied[1] == 1.0 and copied[2] == 0.0
    assert copied[0] == pytest.approx(4 / 25)  # 4 of the prompt's 25 word trigrams: the quoted sentence
    assert copy_statistics([""], ["anything at all here"]).tolist() == [[0.0]]
    assert representation_dim("statistics+prompt_copy", 8) == 7 + 1


def test_line_ending_tells_a_song_or_list_that_ends_as_its_lines_do_from_prose_cut_short():
    song = "Verse 1:\nWalking down the street\nGot my hair spiked up\nFeeling like a rebel\n\nChorus:\nLiving for the night"
    names = "1. GradPrep Academy\n2. Grad School Insider\n3. Apply with Ease"
    prose = "Water evaporates from the oceans. It condenses into clouds.\nThen it falls as"
    clean = "One line only."
    got = ending_statistics([""] * 5, [song, names, prose, clean, song[:20]])[:, 0].tolist()
    assert got == pytest.approx([3 / 5, 1.0, 0.0, 1.0, 0.0])  # "Verse 1:" ends clean; a cut first line has no peers
    clean_ending = dict(zip(COHERENCE_STATISTICS, coherence_statistics([""] * 2, [song, names]).T))["clean_ending"]
    assert clean_ending.tolist() == [0.0, 0.0]  # what the old column says of both



def test_last_line_reads_a_cut_answers_last_line_against_its_own_lines():
    song = "Verse 1:\nWalking down the street\nGot my hair spiked up\nFeeling like a rebel\n\nChorus:\nLiving for the night"
    table = "| Year | Time | Game |\n| --- | --- | --- |\n| 2011 | 1:00 PM | Ravens vs. Steelers |"
    # the quiz's options end as 3 of its 5 earlier lines do
    quiz = "1. How did you hear of us?\na) Online\nb) A friend\n\n2. How was your stay?\na) Poor\nb) Good"
    tips = "Here are the tips.\n\n1. **Stretch**: loosen up first.\n\n2. **Squats**:"
    whole = [song, table, quiz, "Thanks for reading.\n\n**Feel free to add, remove or adjust the songs to your taste.**"]
    cut = [song[: -len(" for the night")],  # one word of a four-word line: 3 of 5 earlier lines end so, times 1/4
           table[: -len(" | Ravens vs. Steelers |")] + " |",  # a closed row of two cells where the table has three
           table[: -len(" |")],  # a row that does not close
           quiz[: -len(" Good")],  # a list mark alone
           tips,  # a heading in bold, and an introduction ending in a colon, with nothing after them
           tips[: -len("\n\n2. **Squats**:")] + "\n\n2. Then:",
           "The water cycle:\nWater evaporates. It condenses into clouds.\nThen it falls as"]
    got = last_line_statistics([""] * 11, whole + cut)[:, 0].tolist()
    assert got == pytest.approx([3 / 5, 1.0, 3 / 5, 1.0, 3 / 5 / 4, 2 / 3, 0.0, 0.0, 0.0, 0.0, 0.0])
    # every kind of line that promises more: a markdown heading, a bold one without a colon, each list mark alone
    body = "Stretch before you start. Keep your back straight.\n\n"
    ends = ["## Next steps", "**Squats**", "3. **Lunges**", "-", "3.", "(b)", "##"]
    assert last_line_statistics([""] * len(ends), [body + e for e in ends])[:, 0].tolist() == [0.0] * len(ends)
    assert ending_statistics([""] * 3, [body + e for e in ends[1:3]] + [body + "3."])[:, 0].tolist() == [1.0] * 3
    # line_ending reads all the cut ones but the prose as whole
    assert ending_statistics([""] * 6, cut[:6])[:, 0].tolist() == pytest.approx([3 / 5, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert column_names("line_ending+last_line", 4) == ["ends_like_its_lines", "last_line_complete"]
    assert part_columns("bag_statistics+last_line", 4, ["last_line"]).tolist() == [False] * 8 + [True]


def test_closed_last_line_reads_a_posts_sign_off_as_whole_and_a_cut_as_last_line_does():
    """``closed_last_line``: the ways a whole answer closes that ``last_line`` reads as cut (section 2ah's miss: the
    post that ends in its hashtags, 0, lost to its own shuffle), each read as whole; a hex colour is not a hashtag;
    every cut answer of the ``last_line`` test reads as it did, and no answer reads below ``last_line``."""
    body = "We are thrilled to announce a call for collaboration.\n\nJoin us and make a difference!"
    whole = [body + " #Crowdsourcing #Impact",  # tags after the sentence
             body + "\n\n#Crowdsourcing #Collaboration #Impact",  # a line of tags
             body + "\n- #WomenInSTEM\n- #GirlsWhoCode",  # a list of them
             body + " 🚀📈",  # emoji
             "Follow me! #architect #Tech Enthusiast #DesignDriven 🌍💡",  # a tag run, half the words tags
             body + "\n\n**Enjoy!**", body + "\n\n**[End of Episode]**", body + "\n\nTHE END",
             "Dear Ms. Lee,\n\nThank you for the offer.\n\nSincerely,\n**[Your Name]**",
             "1. **Sweden**\n2. **Norway**\n3. **Finland**\n4. **Denmark**",  # the last of a list of bold names
             "它具有卓越的性能。", "B."]
    assert closed_last_line_statistics([""] * len(whole), whole)[:, 0].tolist() == [1.0] * len(whole)
    assert last_line_statistics([""] * len(whole), whole)[:, 0].tolist() == [0.0] * len(whole)
    # a colour is not a tag: the list of colours reads as last_line reads it (its lines end alike), not as "5. Gray:"
    colours = "Pale colours:\n\n1. Lilac: #F2E9FE\n2. Pink: #FFE4E1\n3. Peach: #FFF8DC\n4. Gray: #F2F2F2"
    cut = ["Here are the steps:\n\n**Step 2**", body + "\n\n#", "The answer is\n\u200b", colours,
           "1. **Stretch**: loosen up first.\n2. **Squats**", "Thanks for reading. #Impact\n\nAnd then we"]
    got = closed_last_line_statistics([""] * len(cut), cut)[:, 0]
    assert got.tolist() == last_line_statistics([""] * len(cut), cut)[:, 0].tolist()
    assert got.tolist() == pytest.approx([0.0, 0.0, 0.0, 3 / 4, 0.0, 0.0])
    assert column_names("last_line+closed_last_line", 4) == ["last_line_complete", "last_line_closed"]


def test_piece_repeats_read_a_chorus_far_from_the_answer_said_again():
    verse = "Walking down the street K\nRecords in my hand K\n"
    chorus = "Teenager in the eighties\nLiving for the night\n"
    song = "".join(f"Verse {k}:\n{verse.replace('K', str(k))}\nChorus:\n{chorus}\n" for k in range(5))
    prose = "Mix the flour with the water. Let it rest. Bake it for an hour."
    texts = [prose, *("\n\n".join([prose] * k) for k in (2, 5)), "\n\n".join([song] * 2), song]
    got = repeat_statistics([""] * len(texts), texts)[:, 0].tolist()
    # distinct pieces: 5 verse labels, 10 verse lines, "Chorus:" and 2 chorus lines; the last 3 said five times
    assert got == pytest.approx([0.0, 1.0, 1.0, 1.0, 3 / 18])
    # the share of repeated pieces puts the song halfway to the answer said five times
    repeated = bag_statistics([""] * 2, [texts[2], song])[:, BAG_STATISTICS.index("repeated_sentences")]
    assert repeated.tolist() == pytest.approx([4 / 5, 12 / 30])
    # order-blind, as the bag is; case does not make a piece new
    shuffled = make_junk("shuffled_sentences", "", song, [("", prose)])
    assert shuffled != song and repeat_statistics([""], [shuffled])[0, 0] == pytest.approx(3 / 18)
    assert repeat_statistics([""], ["Go home. go home."])[0, 0] == 1.0
    assert repeat_statistics([""], [""])[0, 0] == 0.0
    assert column_names("bag_statistics+piece_repeats", 4)[-1] == "repeated_piece_share"


def test_prompt_overlap_reads_the_echo_apart_from_an_answer_that_restates_or_rewrites():
    question = "What are the best exercises for beginners who want to get stronger at home?"
    restated = ("The best exercises for beginners who want to get stronger at home are push-ups, squats and "
                "lunges. Start with three sets of ten, and add a set each week.")
    rewrite_prompt = 'Correct the grammar of this sentence: "she go to the school every days by bus"'
    rewrite = "She goes to the school every day by bus."
    prompts = [question, question, rewrite_prompt, question, "hi", "Hi!"]
    answers = [make_junk("echo", question, restated, [("", "")]), restated, rewrite, "Push-ups and squats.",
               "Hi there!", "Well"]
    got = overlap_statistics(prompts, answers)[:, 0]
    copied = copy_statistics(prompts, answers)[:, 0]
    assert got[0] == 1.0 and copied[0] == 1.0
    # restating the question copies most of the prompt's trigrams but adds as many of its own
    assert copied[1] > 0.7 and got[1] < 0.45
    # the rewrite keeps the quoted sentence's unchanged trigrams and leaves out the instruction's
    assert 0.0 < got[2] < 0.3
    assert got[3] == 0.0
    # a prompt or an answer under three words is read by its words: {hi} of {hi, there}; nothing shared
    assert got[4:].tolist() == [0.5, 0.0]
    assert column_names("bag_statistics+prompt_overlap", 4)[-1] == "prompt_jaccard"


ANSWER = ("To bake bread at home, you need flour, water, yeast and salt. First, mix the flour with the water and "
          "let it rest for an hour. This is called the autolyse.\n\n1. Add the yeast and the salt.\n2. Knead the "
          "dough for ten minutes.\n3. Let it rise until it has doubled in size.\n4. Bake it at 230 degrees for "
          "forty minutes.\n\nIn the end, let the loaf cool before you cut it.")


def test_order_statistics_see_shuffled_words_and_sentences():
    prompt = "How do I bake bread at home?"
    words, sentences = (make_junk(k, prompt, ANSWER, []) for k in ("shuffled_words", "shuffled_sentences"))
    o = dict(zip(ORDER_STATISTICS, order_statistics([prompt] * 3, [ANSWER, words, sentences]).T))
    # the real answer: every sentence end is followed by a capital, numbering in sequence, markers at line starts
    assert o["lower_after_sentence_end"][0] == 0 and o["list_out_of_order"][0] == 0
    assert o["inline_list_markers"][0] == 0 and o["opens_with_connective"][0] == 0
    assert o["prompt_words_lead"][0] > 0.1  # the first sentence restates the question
    # shuffled words: lower-case words after stops, frequent bigrams broken
    assert o["lower_after_sentence_end"][1] > 0.3
    assert o["common_bigrams"][1] < o["common_bigrams"][0]
    # shuffled sentences (the layout kept): the same words and bigrams, but the list is out of sequence
    assert o["common_bigrams"][2] == pytest.approx(o["common_bigrams"][0], abs=0.02)
    assert o["list_out_of_order"][2] > 0
    assert order_statistics(["p"], [""]).tolist() == [[0.0] * len(ORDER_STATISTICS)]


def test_discourse_statistics_see_formulas_and_sequences_out_of_place():
    real = ("Sure! Here is how to plant a tree. First, dig a hole twice as wide as the roots. Then set the tree in "
            "it. Finally, water it well. Step 1 takes an hour and step 2 a minute. I hope this helps!")
    moved = ("Then set the tree in it. I hope this helps! Finally, water it well. Sure! Here is how to plant a "
             "tree. First, dig a hole twice as wide as the roots. Step 2 takes a minute and step 1 an hour.")
    d = dict(zip(DISCOURSE_STATISTICS, discourse_statistics(["p"] * 3, [real, moved, ""]).T))
    assert [d[k][0] for k in DISCOURSE_STATISTICS] == [0, 0, 0, 0]  # opener first, closer last, in sequence
    # ("Here is" is no opening formula: answers say it mid-way.) Moved: an opener in the middle, a closer early,
    # Then(2) -> Finally(9) -> First(1): one step back of two; Step 2 -> step 1: back
    assert d["opener_not_first"][1] == 1 and d["closer_in_first_half"][1] == 1
    assert d["sequence_words_backwards"][1] == pytest.approx(0.5) and d["numbered_labels_backwards"][1] == 1
    assert [d[k][2] for k in DISCOURSE_STATISTICS] == [0, 0, 0, 0]
    # in a numbered list the formulas and sequence words follow the item's enumerator
    listed = "Here is the plan:\n1. Finally, serve it.\n2. Then bake it.\n3. First, mix the flour.\n4. In conclusion, enjoy."
    assert discourse_statistics(["p"], [listed]).tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_representation_parts_and_dimensions():
    assert parse_representation("response_tokens+response+statistics") == ["response_tokens", "response", "statistics"]
    assert representation_dim("joint", 8) == 8
    assert representation_dim("response_tokens+response+interaction+statistics", 8) == 8 + 8 + 17 + 7
    assert representation_dim("statistics+order+discourse", 8) == 7 + 8 + 4
    assert representation_dim("response+sentence_order", 8) == 8 + 8
    assert representation_dim("response+statistics+order", 8) == 8 + 7 + len(ORDER_STATISTICS)
    for bad in ("", "joint+joint", "joint+colour"):
        with pytest.raises(ConfigError, match="representation"):
            parse_representation(bad)
    with pytest.raises(ConfigError, match="LoRA encoder trains through the joint representation"):
        EncoderConfig(mode="lora", representation="response+statistics")


class HashEncoder:
    """A deterministic fake encoder: a text's vector depends on its words; joint texts add the prompt's."""

    config = EncoderConfig()
    dim = 4

    def __init__(self):
        self.calls = []

    def vec(self, text):
        g = torch.Generator().manual_seed(sum(map(ord, text)) % 10_000)
        return torch.randn(4, generator=g)

    def encode(self, prompts, responses=None, span="all", **kwargs):
        self.calls.append((responses is not None, span))
        if responses is None:
            return torch.stack([self.vec(p) for p in prompts])
        out = [self.vec(r) + (self.vec(p) if span == "all" else 0) for p, r in zip(prompts, responses)]
        return torch.stack(out)


def test_response_features_concatenate_the_parts_in_order():
    enc = HashEncoder()
    prompts, responses = ["p one", "p two"], ["the answer", "p two"]
    h = response_features(enc, prompts, responses, spec="joint+response_tokens+response+interaction+statistics")
    assert h.shape == (2, representation_dim("joint+response_tokens+response+interaction+statistics", 4))
    alone = torch.stack([enc.vec(r) for r in responses])
    assert torch.allclose(h[:, 8:12], alone)
    cos = h[:, 12 + 8]
    assert cos[1] == pytest.approx(1.0)  # the response is the prompt itself
    assert torch.allclose(h[:, -7:], torch.from_numpy(coherence_statistics(prompts, responses)))
    # one pass for joint + response_tokens (two spans of it), one for responses alone, one for prompts
    assert enc.calls == [(True, "all"), (True, "response"), (False, "all"), (False, "all")]


def test_sentence_order_is_the_position_weighted_mean_of_the_sentence_embeddings():
    enc = HashEncoder()
    three = "It rains. The ground is wet.\nSo we stay in."
    assert sentences(three) == ["It rains.", "The ground is wet.", "So we stay in."]
    e = torch.nn.functional.normalize(torch.stack([enc.vec(s) for s in sentences(three)]), dim=-1)
    o = sentence_order(enc, [three, "One sentence only.", "A b. C d.", "C d. A b."])
    assert torch.allclose(o[0], (e[2] - e[0]) / 3)  # c = (-1, 0, 1), over n = 3
    assert torch.equal(o[1], torch.zeros(4))  # no order in one sentence
    assert torch.allclose(o[3], -o[2])  # swapping two sentences flips the sign
    # a long answer keeps its first and last MAX_SENTENCES // 2 sentences, at their own positions
    many = [f"Sentence number {i} is here." for i in range(MAX_SENTENCES + 6)]
    n, half = len(many), MAX_SENTENCES // 2
    keep = [*range(half), *range(n - half, n)]
    expected = sum((2 * i / (n - 1) - 1) * torch.nn.functional.normalize(enc.vec(many[i]), dim=0) for i in keep)
    assert torch.allclose(sentence_order(enc, [" ".join(many)])[0], expected / len(keep), atol=1e-6)
    h = response_features(enc, ["p"], [three], spec="response+sentence_order")
    assert h.shape == (1, 8) and torch.allclose(h[0, 4:], o[0])


class CrcEncoder(HashEncoder):
    """A fake encoder whose vectors follow the exact text (a reordering of its words or sentences moves them)."""

    dim = 6

    def vec(self, text):
        return torch.randn(6, generator=torch.Generator().manual_seed(zlib.crc32(text.encode())))


BAG = "sentence_bag+bag_interaction+bag_statistics"


def test_the_bag_parts_are_blind_to_sentence_order_and_nothing_else():
    enc = CrcEncoder()
    prompt = "How do I bake bread at home?"
    # list items moved after a space (where sentences() would give "2." a sentence of its own), a quotation's end
    answers = [ANSWER, "It rains. The ground is wet.\nSo we stay in. He said \"Tomorrow, e.g. at noon.\" We go out.",
               "Here are three:\n\n* **Flour** is milled.\n* Water is added.\n* Salt last.\n\nEnjoy!"]
    for answer in answers:
        shuffles = {make_junk("shuffled_sentences", prompt, answer, [], seed=k) for k in range(4)}
        assert answer not in shuffles and len(shuffles) > 1
        h = response_features(enc, [prompt] * (1 + len(shuffles)), [answer, *shuffles], spec=BAG)
        assert all(torch.equal(row, h[0]) for row in h[1:])  # the same bits, whatever the order
        # the views of rounds 16-18's default (--recipe windowed) do move: the response alone, the compressibility
        moved = response_features(enc, [prompt] * 2, [answer, next(iter(shuffles))], spec="response+statistics")
        assert not torch.equal(moved[0], moved[1])
    # the bag is the mean of its pieces' normalised vectors, list marks stripped; a word shuffle still moves it
    three = answers[1]
    assert bag_sentences(three) == ['He said "Tomorrow, e.g.', 'It rains.', 'So we stay in.', 'The ground is wet.',
                                    'We go out.', 'at noon."']
    assert bag_sentences("1. Mix it.\n* **Bake** it!") == ["Bake** it!", "Mix it."]
    assert bag_pieces("1. Mix it.\n* **Bake** it!") == ["Mix it.", "Bake** it!"]  # the same pieces, in the text's order
    assert sorted(bag_pieces(three)) == bag_sentences(three) and bag_pieces("---") == [] == bag_sentences("---")
    e = torch.nn.functional.normalize(torch.stack([enc.vec(s) for s in bag_sentences(three)]), dim=-1)
    bag = sentence_bag(enc, [three, "One sentence only here.", "here only sentence One.", "---"])
    assert torch.allclose(bag[0], e.mean(0), atol=1e-6)
    assert torch.allclose(bag[1], torch.nn.functional.normalize(enc.vec("One sentence only here."), dim=0))
    assert not torch.allclose(bag[1], bag[2])
    assert torch.equal(bag[3], torch.zeros(6))  # no letter or digit, no bag
    # an answer without a letter keeps its digits: "42" is an answer, not an empty one
    assert torch.allclose(sentence_bag(enc, ["42"])[0], torch.nn.functional.normalize(enc.vec("42"), dim=0))
    # the bag's relevance features and the gate's name for their cosine
    x = torch.nn.functional.normalize(enc.vec(prompt), dim=0)
    h = response_features(enc, [prompt], [three], spec=BAG)
    assert h[0, 6 + 12] == pytest.approx(float(x @ torch.nn.functional.normalize(bag[0], dim=0)), abs=1e-6)
    assert part_columns(BAG, 6, ["bag_cosine"]).nonzero().ravel().tolist() == [6 + 12]
    # the same column is what --monotone bag_cosine orients, and nothing else of the representation
    oriented = feature_orientation(BAG, 6, ["bag_cosine"], ["log_normal"])
    assert [i for i, v in enumerate(oriented) if v] == [6 + 12] and oriented[6 + 12] == 2
    # --monotone bag_prompt_coverage orients that one statistic of bag_statistics, the share of the prompt's words
    from vrm_pyro.covariates import BAG_STATISTICS, bag_statistics

    coverage = 6 + 13 + BAG_STATISTICS.index("bag_prompt_coverage")
    assert h[0, coverage] == pytest.approx(float(bag_statistics([prompt], [three])[0, coverage - 19]))
    both = feature_orientation(BAG, 6, ["bag_cosine", "bag_prompt_coverage"], ["log_normal", "half_normal"])
    assert [(i, v) for i, v in enumerate(both) if v] == [(6 + 12, 2), (coverage, 1)]
    with pytest.raises(ConfigError, match=r"add \+bag_interaction, or pass --monotone ''"):  # the recipe's default
        feature_orientation("response", 6, ["bag_cosine"])
    with pytest.raises(ConfigError, match="'interaction'"):
        part_columns(BAG, 6, ["cosine"])


def test_bag_statistics_see_repetition_echo_and_a_cut_answer():
    prompt = "How do I bake bread at home?"
    stats = bag_statistics([prompt] * 4, [ANSWER, "\n\n".join([ANSWER] * 5), prompt, ANSWER[:len(ANSWER) // 3]])
    s = dict(zip(BAG_STATISTICS, stats.T))
    assert s["repeated_sentences"][0] == 0 and s["repeated_sentences"][1] == pytest.approx(0.8)
    assert s["bag_repeated_4grams"][1] > 0.7 > 0.05 > s["bag_repeated_4grams"][0]
    assert s["bag_compression_ratio"][1] < s["bag_compression_ratio"][0] / 2
    assert s["bag_prompt_echo"][2] == 1 and s["bag_prompt_echo"][0] < 0.2
    assert s["bag_prompt_coverage"][2] == 1
    assert s["unfinished_sentences"][3] > s["unfinished_sentences"][0]  # the cut sentence
    assert np.isfinite(bag_statistics(["p"], [""])).all()


class TableEncoder(HashEncoder):
    """Each text's vector from a table: the geometry of the sentences is set by hand."""

    dim = 3
    table = {"Bread needs flour.": (1.0, 0.0, 0.0), "Flour is milled wheat.": (1.0, 1.0, 0.0),
             "Wheat needs rain.": (0.0, 1.0, 1.0), "Rain falls in spring.": (0.0, 0.0, 1.0),
             "How is bread made?": (1.0, 0.0, 0.0)}

    def vec(self, text):
        return torch.tensor(self.table[text])


def test_sentence_flow_sees_adjacent_sentences_and_an_opening_on_the_question():
    enc = TableEncoder()
    prompt, real = "How is bread made?", "Bread needs flour. Flour is milled wheat. Wheat needs rain. Rain falls in spring."
    shuffled = "Wheat needs rain. Bread needs flour. Rain falls in spring. Flour is milled wheat."
    x = enc.encode([prompt] * 3)
    flow = sentence_flow(enc, [real, shuffled, "Bread needs flour."], prompt_emb=x)
    # by hand: e = the table's rows, normalised; x̂ = e_1
    e = torch.nn.functional.normalize(torch.stack([enc.vec(s) for s in sentences(real)]), dim=-1)
    sim = e @ e.T
    adjacent = sim.diagonal(1).mean() - sim.triu(1).sum() / 6
    rel = e[:, 0]
    c = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    centre = e @ torch.nn.functional.normalize(e.mean(0), dim=0)
    expected = torch.stack([adjacent, rel[0] - rel.mean(), (c * rel).mean(), centre[0] - centre.mean()])
    assert torch.allclose(flow[0], expected, atol=1e-6)
    assert flow[0, 0] > 0.3 and flow[0, 1] > 0.5 and flow[0, 2] < -0.3  # a chain, opening on the question
    assert flow[1, 0] < flow[0, 0] and flow[1, 1] < 0 < flow[1, 2]  # shuffled: the chain broken, the lead late
    assert torch.equal(flow[2], torch.zeros(4))  # one sentence: no order
    # beside sentence_order, the sentences are encoded once
    enc.calls.clear()
    h = response_features(enc, [prompt], [real], spec="sentence_order+sentence_flow", prompt_emb=x[:1])
    assert enc.calls == [(False, "all")] and torch.allclose(h[0, 3:], flow[0], atol=1e-6)
    assert torch.allclose(h[0, :3], sentence_order(enc, [real])[0])
    assert representation_dim("sentence_order+sentence_flow", 384) == 388


class BagOfWordsEncoder(HashEncoder):
    """A text's vector is the sum of its words' random vectors: sentences that share words are alike."""

    dim = 16

    def vec(self, text):
        words = text.lower().split()
        return sum(torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, w)) * 7919 % 100_003))
                   for w in words)


def test_a_linear_head_on_sentence_order_tells_an_answer_from_its_sentences_shuffled():
    """Answers are an opening, two body sentences and a closing, drawn from pools; a direction fitted on 40
    answers and their shuffles ranks held-out answers above their own shuffles."""
    enc = BagOfWordsEncoder()
    rng = np.random.default_rng(0)
    opening = [f"Here is what you asked about, item {i}." for i in range(6)]
    body = [f"Detail {i} matters for this case." for i in range(20)]
    closing = [f"In short, that settles point {i}." for i in range(6)]

    def answer():
        return [opening[rng.integers(6)], *rng.choice(body, 2, replace=False), closing[rng.integers(6)]]

    def gaps(k):
        real = [answer() for _ in range(k)]
        shuffled = [[s[i] for i in np.roll(rng.permutation(4), 1)] for s in real]
        shuffled = [s if s != r else s[::-1] for s, r in zip(shuffled, real)]
        return sentence_order(enc, [" ".join(s) for s in real]) - sentence_order(enc, [" ".join(s) for s in shuffled])

    train_order, test_order = gaps(40), gaps(200)
    w = train_order.mean(0)  # the real answer should score higher: w . (o(real) - o(shuffled)) > 0
    assert (test_order @ w > 0).float().mean() > 0.9


def test_whitening_gives_identity_covariance_and_standardising_unit_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g) @ torch.randn(6, 6, generator=g) + 3.0
    w = FeatureTransform(6, kind="whiten").fit(x, torch.zeros(2000, 0))
    z = w.features(x)
    assert torch.allclose(z.T @ z / 1999, torch.eye(6), atol=1e-3) and z.mean(0).abs().max() < 1e-4
    s = FeatureTransform(6, kind="standardize").fit(x, torch.zeros(2000, 0)).features(x)
    assert torch.allclose(s.std(0), torch.ones(6), atol=1e-4)


def test_a_column_constant_in_training_enters_as_zero_not_times_a_million():
    """A statistic that never fired on the training responses (on the HH slice: a closer in the first half, a
    Markdown header) had its spread floored at 1e-6, so the first answer that had it scored about -616 with the
    default model; it now enters as 0, and the training rows are unchanged."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)
    x[:, 2] = 0.0  # never fires in training
    phi = torch.cat([torch.randn(50, 1, generator=g), torch.zeros(50, 1)], 1)
    t = FeatureTransform(4, 2, kind="standardize").fit(x, phi)
    z = t.features(x)
    assert torch.equal(z[:, 2], torch.zeros(50)) and torch.allclose(z[:, [0, 1, 3]].std(0), torch.ones(3), atol=1e-5)
    fires = x[:1].clone()
    fires[0, 2] = 1.0
    assert t.features(fires)[0, 2] == 0 and torch.equal(t.features(fires)[0, [0, 1, 3]], z[0, [0, 1, 3]])
    assert t.covariates(torch.tensor([[0.0, 3.0]]))[0, 1] == 0  # a header where training had none
    old = (fires - t.h_mean) / t.h_scale  # what it was: a million
    assert old[0, 2] > 1e5


def test_whiten_drops_a_column_constant_in_training():
    """The ``whiten`` transform's guard for the same case: a constant column is an eigenvector of the training
    covariance with eigenvalue 0, dropped with the directions below 1e-6 of the largest, so a value it never took in
    training moves no output (rather than entering times a million)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 5, generator=g) @ torch.randn(5, 5, generator=g)
    x[:, 3] = 0.7  # never varies in training
    t = FeatureTransform(5, kind="whiten").fit(x, torch.zeros(200, 0))
    fires = x[:4].clone()
    fires[:, 3] = 100.0
    assert torch.allclose(t.features(fires), t.features(x[:4]), atol=1e-4)
    z = t.features(x)
    assert torch.allclose(z.T @ z / 199, torch.diag(torch.tensor([0.0, 1, 1, 1, 1])), atol=1e-3)  # 4 kept, 1 dropped


def test_leace_erasure_leaves_no_linearly_decodable_covariate():
    """LEACE's guarantee, checked: after erasure the least-squares regression of each covariate on the
    features does no better than its mean (R^2 = 0 on the fitting data), while the rest of the features
    is kept (a label that does not depend on length stays decodable)."""
    g = torch.Generator().manual_seed(1)
    n, f = 3000, 12
    length = torch.randn(n, 1, generator=g) * 2 + 5
    bold = torch.randint(0, 4, (n, 1), generator=g).float()
    content = torch.randn(n, 1, generator=g)
    x = torch.randn(n, f, generator=g)
    x[:, :3] += length * torch.tensor([1.0, -0.5, 0.3]) + 0.5 * bold
    x[:, 3] += 2.0 * content[:, 0]
    t = FeatureTransform(f, 2, kind="whiten", erase=True).fit(x, torch.cat([length, bold], 1))
    def r2(features, y):
        design = np.concatenate([features.double().numpy(), np.ones((n, 1))], 1)
        coef, *_ = np.linalg.lstsq(design, y.double().numpy(), rcond=None)
        return 1 - (y.double().numpy() - design @ coef).var() / y.double().numpy().var()

    h = t.features(x)
    assert r2(h, length) < 1e-6 and r2(h, bold) < 1e-6
    assert r2(h, content) > 0.75
    assert r2(x, length) > 0.5 and r2(x, content) > 0.75
    # standardised covariates
    assert torch.allclose(t.covariates(torch.cat([length, bold], 1)).std(0), torch.ones(2), atol=1e-4)


def test_sentences_keep_a_list_item_with_its_enumerator_and_split_after_numbers_in_running_text():
    from vrm_pyro.covariates import reorder_sentences, sentence_pieces, sentences

    text = "Steps:\n1. Mix. Add water.\n 2. Bake at 200. Serve in item 3. Eat.\u00a0Done.\r\nEnd"
    assert sentences(text) == ["Steps:", "1. Mix.", "Add water.", "2. Bake at 200.", "Serve in item 3.", "Eat.",
                               "Done.", "End"]
    assert "".join(sentence_pieces(text)) == text  # pieces and seams give the text back
    assert sentences("1.\nMix the flour.") == ["1.", "Mix the flour."]  # an enumerator keeps only its own line
    # another order whenever one exists; unchanged where every order gives the same text ("3.  3." is one item)
    for t in ("1. Mix. Bake.", "Mix. Bake.", "---\nMix.", "1.\n1.\n2."):  # ("A. B." reads as initials)
        assert reorder_sentences(t, lambda order: None) != t
    assert reorder_sentences("Yes. Yes.", lambda order: None) == "Yes. Yes."
    assert reorder_sentences("3.  3.  3.", lambda order: None) == "3.  3.  3."


def test_sentences_do_not_end_after_an_abbreviation_or_an_initial_within_a_line():
    from vrm_pyro.covariates import reorder_sentences, sentence_pieces, sentences

    text = ("Apple Inc. makes phones, e.g. the iPhone. J.K. Rowling met Dr. Lee in the U.S. last year. Ravens vs. "
            "Browns ended 23-16. Preheat to 350 \u00b0F. Place the rack. It ended in World War I. Then peace.")
    assert sentences(text) == ["Apple Inc. makes phones, e.g. the iPhone.", "J.K. Rowling met Dr. Lee in the U.S. last year.",
                               "Ravens vs. Browns ended 23-16.", "Preheat to 350 \u00b0F.", "Place the rack.",
                               "It ended in World War I.", "Then peace."]
    assert "".join(sentence_pieces(text)) == text
    # a sentence does not start lower-case; a line break still ends one, whatever comes before it
    assert sentences("Add 2 tbsp. oil. Stir well.") == ["Add 2 tbsp. oil.", "Stir well."]
    assert sentences("Written by J.\nCole wrote it.") == ["Written by J.", "Cole wrote it."]
    # so a shuffle moves whole sentences, never a fragment cut after "Inc."
    shuffled = reorder_sentences("Apple Inc. makes phones. Google makes search.", lambda order: order.reverse())
    assert shuffled == "Google makes search. Apple Inc. makes phones."
