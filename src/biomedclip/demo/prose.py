"""Article text around the figures: titles, authors, abstracts, sections, references.

Plain and varied enough to look like PMC articles to a parser; the figures carry the signal.
"""

from __future__ import annotations

from numpy.random import Generator

from biomedclip.demo.article import FigRef, Paragraph
from biomedclip.demo.captions import upper_first
from biomedclip.demo.figures import pick

TOPICS = [
    "hepatocellular carcinoma", "COVID-19 pneumonia", "glioblastoma", "Alzheimer's disease",
    "type 2 diabetes", "triple-negative breast cancer", "sepsis", "ulcerative colitis",
    "rheumatoid arthritis", "idiopathic pulmonary fibrosis", "chronic kidney disease",
    "melanoma", "atherosclerosis", "tuberculosis", "Parkinson's disease", "osteoarthritis",
]
APPROACHES = [
    "a multicentre retrospective cohort", "a prospective observational study",
    "single-cell transcriptomics", "a murine model", "patient-derived organoids",
    "a randomised controlled trial", "multimodal imaging", "a case series",
]
CLAIMS = [
    "identifies a prognostic signature", "reveals a role for inflammatory signalling",
    "improves early diagnosis", "characterises disease progression",
    "defines a therapeutic vulnerability", "links imaging phenotypes to outcomes",
]
SURNAMES = ["Smith", "Wang", "García", "Müller", "Kim", "Okafor", "Rossi", "Nguyen", "Patel",
            "Kowalski", "Silva", "Johansson", "Tanaka", "Haddad", "Dubois", "O'Brien"]
GIVEN = ["Anna", "Wei", "Carlos", "Julia", "Min-jun", "Chidi", "Luca", "Linh", "Priya", "Piotr",
         "Ana", "Erik", "Yuki", "Omar", "Claire", "Sean"]
JOURNALS_CITED = ["Nature", "Lancet", "N Engl J Med", "Cell", "J Clin Invest", "Radiology",
                  "Mod Pathol", "Nat Commun", "PLoS Med", "BMJ"]


def title(rng: Generator, topic: str) -> str:
    return pick(rng, [
        f"{upper_first(pick(rng, APPROACHES))} of {topic} {pick(rng, CLAIMS)}",
        f"Clinical and molecular characterisation of {topic}",
        f"{upper_first(topic)}: insights from {pick(rng, APPROACHES)}",
        f"Imaging and histopathology of {topic} in {pick(rng, APPROACHES)}",
    ])


def authors(rng: Generator) -> list[tuple[str, str]]:
    return [(pick(rng, SURNAMES), pick(rng, GIVEN)) for _ in range(int(2 + rng.integers(7)))]


def abstract(rng: Generator, topic: str) -> list[str]:
    return [
        f"Background: {upper_first(topic)} remains a major cause of morbidity worldwide.",
        f"Methods: We used {pick(rng, APPROACHES)} to study {topic}.",
        f"Results: Our analysis {pick(rng, CLAIMS)} in {topic}.",
        "Conclusions: These findings support further prospective validation.",
    ]


def sections(rng: Generator, topic: str, cited: list[tuple[str, str]]) -> list[tuple[str, list[Paragraph]]]:
    """Introduction, Methods, Results (one paragraph citing each figure), Discussion.

    `cited` holds (rid, label) of each figure or figure group, in order.
    """
    results: list[Paragraph] = []
    for rid, label in cited:
        before, after = pick(rng, [("As shown in ", ", the groups differed."),
                                   ("We observed differences between groups (", ")."),
                                   ("", " summarises the main finding."),
                                   ("Consistent with this, ", " supports the observation.")])
        results.append([before, FigRef(rid, label), after])
    return [
        ("Introduction", [[f"{upper_first(topic)} is a heterogeneous condition."],
                          [f"Here we used {pick(rng, APPROACHES)} to address this gap."]]),
        ("Materials and Methods", [["The study was approved by the institutional ethics committee."],
                                   ["Statistical analyses were performed in R 4.3."]]),
        ("Results", results or [["No figures accompany this report."]]),
        ("Discussion", [[f"Our study {pick(rng, CLAIMS)} in {topic}."]]),
    ]


def references(rng: Generator, count: int) -> list[tuple[str, str]]:
    out = []
    for k in range(1, count + 1):
        year = int(1995 + rng.integers(30))
        out.append((f"B{k}", f"{pick(rng, SURNAMES)} {pick(rng, GIVEN)[0]}, et al. "
                    f"{upper_first(pick(rng, CLAIMS))}. {pick(rng, JOURNALS_CITED)}. {year};"
                    f"{int(1 + rng.integers(400))}:{int(1 + rng.integers(2000))}."))
    return out
