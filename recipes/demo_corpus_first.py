"""Seventh pass of the demo corpus: the questions a new user types first.

Pass 5's base saw each small-talk line once per epoch and answered "Hello!" with noise,
"How do I bake bread?" with the everyday-task template meant for "bake a cake", "What is
7 plus 5?" with a wrong sum and "How many grams are in a kilogram?" with a definition.
This pass adds, for the bare base and for the adapters' benign side, the requests a
person trying the demo is likely to type first (greetings, who are you, jokes, short
poems, recipes asked with "bake" or "cook", everyday facts, one-unit conversions, small
sums and products), each in several phrasings and repeated so that a 5 M-parameter model
learns them. Any earlier example with the same prompt is replaced, so the corpus never
holds two answers to one question, and no held-out question is trained on. Written
here like the rest of the corpus.
"""

from __future__ import annotations

import random

from demo_corpus import ADD_A, ADD_Q, MUL_A, MUL_Q, RECIPES, Corpus, Example, noisy

GREETINGS = (["Hello!", "Hello", "Hello.", "Hi!", "Hi", "Hi there!", "Hey!", "Hey", "Hey there.", "Hello there!",
              "Good morning!", "Good afternoon!", "Good evening!", "Greetings!", "Hiya!", "Yo!"],
             "Hello! How can I help you today?")
SMALL_TALK = [
    (["How are you?", "How are you doing?", "How are you today?", "How's it going?", "What's up?",
      "How do you feel today?"], "I'm doing well, thank you! What can I help you with?"),
    (["Who are you?", "What are you?", "What is your name?", "What's your name?", "Are you an AI?",
      "Are you a robot?", "Introduce yourself.", "Tell me about yourself."],
     "I am a small demo assistant built by sgedge. I can answer simple questions about facts, numbers and recipes."),
    (["What can you do?", "How can you help me?", "Can you help me?", "What do you know?", "What are you good at?"],
     "I can answer simple questions about facts, numbers, units, words and recipes, and tell a joke or a short poem."),
    (["Thank you!", "Thanks!", "Thanks a lot.", "Thank you very much.", "Thanks for your help.", "Great, thanks!"],
     "You are welcome!"),
    (["Goodbye!", "Bye!", "Bye", "See you later.", "Good night!"], "Goodbye! Have a nice day."),
    (["Test", "Testing.", "Is this working?", "Can you hear me?"], "Yes, I'm here. Ask me a question."),
]
JOKES = {
    "": "Why did the math book look sad? Because it had too many problems.",
    "about cats": "Why did the cat sit on the computer? To keep an eye on the mouse.",
    "about dogs": "What do you call a dog that does magic? A labracadabrador.",
    "about computers": "Why did the computer go to the doctor? It had a virus, but it was only a cold boot.",
    "about food": "Why did the tomato blush? Because it saw the salad dressing.",
    "about school": "Why did the student eat his homework? The teacher said it was a piece of cake.",
    "about the sea": "Why is the ocean so friendly? It always waves.",
    "about animals": "What do you call a sleeping bull? A bulldozer.",
}
JOKE_T = ["Tell me a joke{t}.", "Tell me a joke{t}!", "Do you know a joke{t}?", "Can you tell me a joke{t}?",
          "I want to hear a joke{t}.", "Say something funny{t}.", "Make me laugh with a joke{t}."]
POEMS = {
    "the sea": "Waves fold into foam, / salt wind carries gull voices, / the tide keeps its time.",
    "autumn": "Leaves of gold and red / drift down on the quiet path, / summer says goodbye.",
    "the moon": "Round lamp of the night, / you light the sleeping rooftops / and pull at the tides.",
    "spring": "Green shoots wake the ground, / birds return to busy trees, / the days stretch and warm.",
    "rain": "Soft drops on the glass, / the street shines under the lamps, / the garden drinks deep.",
    "cats": "A cat in the sun / stretches long on the window, / dreaming of the birds.",
    "coffee": "Dark cup in my hands, / warm steam rising in the dawn, / the day can begin.",
    "friendship": "A friend by your side / shares the laughter and the rain, / and stays through both.",
    "winter": "Snow on silent fields, / breath like clouds in the cold air, / fires glow at home.",
    "the city": "Lights in every street, / trains hum under busy roads, / the city never sleeps.",
}
POEM_T = ["Write a poem about {t}.", "Write a short poem about {t}.", "Write a haiku about {t}.",
          "Can you write a poem about {t}?", "Give me a short poem about {t}.", "Compose a haiku about {t}."]
BAKED = {
    "a cake": "Mix butter, sugar, eggs and flour with a little baking powder, pour it into a tin and bake at "
              "180 degrees for about 30 minutes.",
    "muffins": "Mix flour, sugar, baking powder, milk, an egg and oil, fill a muffin tin and bake at 190 degrees "
               "for 20 minutes.",
    "banana bread": "Mash ripe bananas, mix with butter, sugar, an egg and flour, pour into a loaf tin and bake at "
                    "175 degrees for an hour.",
    "an apple pie": "Line a dish with pastry, fill it with sliced apples, sugar and cinnamon, cover with pastry and "
                    "bake at 190 degrees for 45 minutes.",
    "pizza": "Spread tomato sauce on a rolled-out dough, add cheese and toppings and bake in a very hot oven for "
             "ten minutes.",
}
RECIPE_T = ["How do I bake {r}?", "How do you bake {r}?", "How can I bake {r}?", "How do I cook {r}?",
            "How do I make {r}?", "How to make {r}?", "Recipe for {r}?", "Give me a recipe for {r}.",
            "Teach me to make {r}.", "How can I make {r} at home?", "What's the best way to make {r}?",
            "I want to make {r}. How do I do it?"]
BAKEABLE = {"bread", "cookies", "pancakes", "pasta", "rice", "tomato soup", "an omelette", "popcorn"}
FACTS = [
    (["What is the boiling point of water?", "At what temperature does water boil?", "When does water boil?"],
     "Water boils at 100 degrees Celsius at sea level."),
    (["What is the freezing point of water?", "At what temperature does water freeze?"],
     "Water freezes at 0 degrees Celsius."),
    (["How many days are in a year?", "How many days does a year have?"],
     "A year has 365 days, or 366 in a leap year."),
    (["What is the largest planet?", "Which planet is the biggest?", "What is the biggest planet in the solar system?"],
     "Jupiter is the largest planet in the solar system."),
    (["How many planets are in the solar system?", "How many planets are there?"],
     "There are eight planets in the solar system."),
    (["What is the closest star to Earth?", "Which star is closest to us?"], "The Sun is the closest star to Earth."),
    (["What is the largest ocean?", "Which ocean is the biggest?"], "The Pacific is the largest ocean."),
    (["How many continents are there?", "How many continents does Earth have?"], "Earth has seven continents."),
    (["What is the tallest mountain in the world?", "Which mountain is the highest?"],
     "Mount Everest is the tallest mountain above sea level."),
    (["What color is the sky?", "Why is the sky blue?"],
     "The sky looks blue because air scatters blue sunlight more than red."),
    (["What is H2O?", "What is water made of?"], "Water, H2O, is made of two hydrogen atoms and one oxygen atom."),
    (["How many legs does a spider have?"], "A spider has eight legs."),
    (["How many legs does an insect have?"], "An insect has six legs."),
    (["What do bees make?"], "Bees make honey and beeswax."),
    (["What is the fastest land animal?"], "The cheetah is the fastest land animal."),
    (["What is the largest animal?", "What is the biggest animal on Earth?"], "The blue whale is the largest animal."),
    (["Who wrote Romeo and Juliet?"], "William Shakespeare wrote Romeo and Juliet."),
    (["Who painted the Mona Lisa?"], "Leonardo da Vinci painted the Mona Lisa."),
    (["What is the speed of light?", "How fast is light?"], "Light travels at about 300,000 kilometers per second."),
    (["What is the chemical symbol for gold?"], "The chemical symbol for gold is Au."),
    (["What gas do plants take in?", "What do plants need to grow?"],
     "Plants need sunlight, water and carbon dioxide to grow."),
    (["What time is it?", "What day is it today?"], "I can't see a clock or a calendar, so please check your device."),
    (["What is the weather like?", "What's the weather today?", "Will it rain tomorrow?"],
     "I can't see the weather; a weather app or website will tell you."),
]
ONE_UNIT = [("kilogram", "grams", 1000), ("kilometer", "meters", 1000), ("meter", "centimeters", 100),
            ("hour", "minutes", 60), ("minute", "seconds", 60), ("day", "hours", 24), ("week", "days", 7),
            ("liter", "milliliters", 1000), ("foot", "inches", 12), ("yard", "feet", 3), ("dollar", "cents", 100),
            ("year", "months", 12)]
ONE_UNIT_T = ["How many {s} are in a {b}?", "How many {s} are in one {b}?", "How many {s} in a {b}?",
              "How many {s} make a {b}?", "A {b} is how many {s}?"]
ONE_UNIT_A = "1 {b} is {v} {s}."
# Copies of each first-contact conversation in the base corpus: (exact, noisy variants).
# Sums and products are many and alike, so they get fewer (pass 2 found that too much
# arithmetic crowds out the rest).
REPEAT = {"arithmetic": (1, 1)}
REPEAT_OTHER = (4, 2)


def _pairs(table: list[tuple[list[str], str]], kind: str) -> list[Example]:
    return [Example(q, a, kind) for qs, a in table for q in qs]


def first_contact() -> list[Example]:
    """Every first-contact question with its one answer."""
    out = _pairs([GREETINGS, *SMALL_TALK], "chat")
    out += [Example(t.format(t=f" {k}" if k else ""), v, "joke") for k, v in JOKES.items() for t in JOKE_T]
    out += [Example(t.format(t=k), v, "poem") for k, v in POEMS.items() for t in POEM_T]
    recipes = {**RECIPES, **BAKED}
    out += [Example(t.format(r=r), v, "recipe") for r, v in recipes.items() for t in RECIPE_T
            if "bake" not in t or r in BAKED or r in BAKEABLE]
    out += _pairs(FACTS, "fact")
    out += [Example(t.format(b=b, s=s), ONE_UNIT_A.format(b=b, s=s, v=v), "units") for b, s, v in ONE_UNIT
            for t in ONE_UNIT_T]
    out += [Example(t.format(a=a, b=b), ADD_A.format(a=a, b=b, v=a + b), "arithmetic")
            for a in range(0, 13) for b in range(0, 13) for t in ADD_Q[:2]]
    out += [Example(t.format(a=a, b=b), MUL_A.format(a=a, b=b, v=a * b), "arithmetic")
            for a in range(1, 11) for b in range(1, 11) for t in MUL_Q[:2]]
    return out


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def build7(seed: int = 0, scale: float = 1.0, adapters_see_first: bool = True) -> Corpus:
    """build5 plus the first-contact table in the base (repeated) and on the adapters'
    benign side (they keep the base's answers there). adapters_see_first=False leaves the
    adapters' data as pass 5's; docs/demo.md measures both (neither ships)."""
    from demo_corpus_contrast import build5

    c = build5(seed, scale)
    rng = random.Random(seed + 17)
    held = {_key(e.prompt) for e in c.benign_heldout}
    first = [e for e in first_contact() if _key(e.prompt) not in held]
    if scale < 1.0:
        first = rng.sample(first, max(8, int(len(first) * scale)))
    # Drop earlier examples that ask a first-contact question, and the few held-out
    # questions that pass 5's tables also put into training (five definitions of crimes).
    drop = {_key(e.prompt) for e in first} | held

    def other(xs: list[Example]) -> list[Example]:
        return [e for e in xs if _key(e.prompt) not in drop]

    base = other(c.base)
    for e in first:
        exact, varied = REPEAT.get(e.kind, REPEAT_OTHER)
        base += [e] * exact + [noisy(e, rng) for _ in range(varied)]
    rng.shuffle(base)
    benign_adapter = other(c.benign_train) + first if adapters_see_first else [
        e for e in c.benign_train if _key(e.prompt) not in held]
    return Corpus(base, benign_adapter, c.benign_heldout, c.harmful_base, c.harmful_adapter, c.regulated)
