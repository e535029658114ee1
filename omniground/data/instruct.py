"""Instruction templates: many phrasings per task, so that a model learns the task, not one sentence.

A template set per task holds questions (what a user asks) and answers (what the assistant says);
`render` picks one of each with the caller's seeded RNG and fills the slots. Every box and span in
an answer is written by `omniground.grounding` (format_box / format_span / ground_phrase), never by
hand, so a template cannot put a location in the wrong notation.

Slots a caller passes to `render`:
  phrase   the referred thing, no leading article ("red mug")      rec, reg, negative, sound_localization
  items    its boxes or spans (Box / Span, several allowed)          rec, reg, sound_localization, *_grounding
  query    an event description ("the dog jumps")                   video_grounding, audio_grounding
  caption  a caption; for grounded_caption already grounded, made with `grounded_text`
Derived slots a template may use: {located} = phrase followed by its items, {where} = the items
alone, {a_phrase} = phrase with "a"/"an".

Stages follow the original: 1 = captions (alignment), 2 = fine-grained grounding, 3 = instruction
mixes (multi-turn dialogue composed with `dialogue`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from omniground.data.schema import PLACEHOLDER
from omniground.grounding import Box, Span, format_box, format_span, ground_phrase


@dataclass(frozen=True)
class TaskTemplates:
    task: str  # the schema's task name
    stage: int
    questions: tuple[str, ...]
    answers: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Stage 1: captions / alignment

_CAPTION_IMAGE_Q = (
    "Describe the image briefly.",
    "Give a short description of this image.",
    "What does this picture show?",
    "Write a one-sentence caption for the image.",
    "Summarize the visual content of the image.",
    "Provide a brief caption for this photo.",
    "What is in this image?",
    "Caption this image.",
    "Tell me what you see in the picture.",
    "Briefly describe what is shown here.",
    "Write a concise description of the photo.",
    "What can be seen in this image?",
    "Give a caption that fits this picture.",
    "Describe the scene in the image in a sentence.",
    "What is depicted in this photograph?",
    "Render a clear and concise summary of the photo.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Offer a succinct explanation of the picture presented.",
    "Relay a brief, clear account of the picture shown.",
    "Summarize what this image is about.",
    "Write a short caption someone could read instead of seeing the image.",
    "In a few words, what does the image contain?",
    "Describe this image as if for an alt text.",
    "What is going on in this picture?",
    "Give me a quick description of the image.",
    "Please caption the photo.",
    "Create a compact narrative representing the image presented.",
    "Explain the contents of the image in one sentence.",
    "How would you describe this picture to someone who cannot see it?",
    "State briefly what the photo shows.",
    "Provide a short summary of the visual content.",
)

_CAPTION_VIDEO_Q = (
    "Describe the video briefly.",
    "What happens in this video?",
    "Write a short caption for this clip.",
    "Summarize the video in one sentence.",
    "Give a brief description of the clip.",
    "What is going on in this video?",
    "Caption this video.",
    "Tell me what the video shows.",
    "Provide a concise summary of the clip.",
    "What can be seen in this video?",
    "Write a one-line description of the video.",
    "Briefly explain what happens in the clip.",
    "Describe the events of this video.",
    "What is this clip about?",
    "Give a short account of what takes place in the video.",
    "Write a concise summary of the video clip.",
    "Describe this video.",
    "Summarize the visual content of the video.",
    "What does this video depict?",
    "Offer a succinct description of the clip.",
    "In a few words, what happens here?",
    "Give me a quick summary of the video.",
    "Explain the content of this video in a sentence.",
    "How would you describe this clip to someone who has not watched it?",
    "Provide a short caption that fits the video.",
    "State briefly what the video shows.",
    "Relay a brief account of the clip.",
    "Present a compact description of the video's main events.",
    "Please caption the clip.",
    "What is the video mainly about?",
    "Write an alt text for this video.",
    "Summarize what you see in the clip.",
)

_CAPTION_AUDIO_Q = (
    "Describe the audio briefly.",
    "What can you hear in this audio?",
    "Write a short caption for this sound clip.",
    "Summarize the audio in one sentence.",
    "Describe this audio please.",
    "What sounds are in this recording?",
    "Caption this audio clip.",
    "Tell me what the audio contains.",
    "Give a concise description of the sounds.",
    "What is happening in this recording?",
    "Write a one-line description of the audio.",
    "Briefly explain what you hear.",
    "Describe the sounds in this clip.",
    "What is this recording about?",
    "Give a short account of the audio.",
    "Provide a brief caption for the sound clip.",
    "Summarize the acoustic content of the clip.",
    "What does this audio sound like?",
    "Offer a succinct description of the recording.",
    "In a few words, what can be heard here?",
    "Give me a quick summary of the audio.",
    "Explain the content of this audio in a sentence.",
    "How would you describe this recording to someone who cannot hear it?",
    "Provide a short caption that fits the audio.",
    "State briefly what the recording contains.",
    "Listen to the clip and describe it.",
    "Present a compact description of the sounds you hear.",
    "Please caption the recording.",
    "What is the main sound in this clip?",
    "Write a subtitle-style description of this audio.",
    "Summarize what you hear in the clip.",
    "What kind of sound scene is this?",
)

_CAPTION_A = ("{caption}",)

# --------------------------------------------------------------------------------------------------
# Stage 2: fine-grained grounding

_REC_Q = (
    "Where is the {phrase}?",
    "Where is the {phrase} in the image?",
    "Locate the {phrase}.",
    "Find the {phrase} in the image.",
    "Give the bounding box of the {phrase}.",
    "Please provide the bounding box coordinate of the region this sentence describes: {phrase}.",
    "Show me where the {phrase} is.",
    "Point out the {phrase}.",
    "Which region contains the {phrase}?",
    "Output the box of the {phrase} as [x1,y1,x2,y2].",
    "Can you locate the {phrase} in this picture?",
    "Detect the {phrase} and give its position.",
    "Where can I find the {phrase}?",
    "Mark the {phrase} with a box.",
    "What are the coordinates of the {phrase}?",
    "Ground this expression in the image: {phrase}.",
    "Draw a box around the {phrase}.",
    "In the image, where is the {phrase} located?",
    "Identify the position of the {phrase}.",
    "Tell me the location of the {phrase}, with coordinates.",
    'Give me the region described by "{phrase}".',
    "Which part of the image shows the {phrase}?",
    "Find this: {phrase}. Answer with its box.",
    "Localize the {phrase} in the picture.",
    "Please locate the {phrase} and include its position in [x0, y0, x1, y1] format.",
    "Could you show where the {phrase} appears?",
    "Return the bounding box for: {phrase}.",
    "I am looking for the {phrase}. Where is it?",
    "Highlight the {phrase} with its coordinates.",
    "Where exactly is the {phrase}?",
    "Give the normalized box of the {phrase}.",
    "Spot the {phrase} in this image.",
)
_REC_A = (
    "{located}",
    "{located}.",
    "The {phrase} is at {where}.",
    "It is here: {where}.",
    "The {phrase}{where}.",
    "You can find the {phrase}{where}.",
    "{where}",
    "Located at {where}.",
)

_REG_Q = (
    "What is in the region {where}?",
    "Describe the region {where}.",
    "What does the box {where} contain?",
    "Give a short description of the area {where}.",
    "What object is at {where}?",
    "Please provide a short description for this region: {where}.",
    "What can you see in {where}?",
    "Tell me what is inside {where}.",
    "Describe the object in the box {where}.",
    "What is shown at {where}?",
    "Name the thing located at {where}.",
    "Caption the region {where}.",
    "Write a referring expression for the region {where}.",
    "What is this{where}?",
    "Identify the object within {where}.",
    "Explain what appears in the region {where}.",
    "What occupies the area {where}?",
    "Give a phrase that describes {where}.",
    "Could you describe what is in {where}?",
    "What does the highlighted region {where} show?",
    "Look at {where}. What is it?",
    "Which object does the box {where} mark?",
    "How would you refer to the thing at {where}?",
    "Summarize the content of the region {where}.",
    "What is visible inside the box {where}?",
    "Describe briefly: {where}.",
    "Please describe the area marked by {where}.",
    "What is the subject at {where}?",
    "Provide a caption for the box {where}.",
    "What's located at {where} in the image?",
    "Tell me about the region {where}.",
    "What would you call the object in {where}?",
)
_REG_A = (
    "{phrase}",
    "{Phrase}.",
    "It is the {phrase}.",
    "That region shows the {phrase}.",
    "The box contains the {phrase}.",
    "This is the {phrase}.",
)

_GROUNDED_CAPTION_Q = (
    "Describe the image and include the object positions in [x0, y0, x1, y1] format.",
    "Describe the image and provide the coordinates for the objects mentioned.",
    "Please describe the image and include the object positions in [x0, y0, x1, y1] format.",
    "Write a caption that gives the box of every object you mention.",
    "Describe this picture, grounding each object with its bounding box.",
    "Give a grounded description of the image.",
    "Caption the image and locate every object you name.",
    "What is in the image? Add the box after each object.",
    "Provide a description with coordinates for each mentioned object.",
    "Describe the scene and mark each object with [x1,y1,x2,y2].",
    "Write a short description of the image with object locations.",
    "Summarize the image, including where each object is.",
    "Tell me what you see and where each thing is.",
    "List the objects in the picture with their positions.",
    "Describe the photo; follow each object with its box.",
    "Give a detailed caption with bounding boxes.",
    "Explain the image content and localize the objects.",
    "Describe the image. Include the coordinates of the objects.",
    "Write a grounded caption for this image.",
    "What objects are present, and where are they?",
    "Provide a caption where every noun phrase carries its box.",
    "Can you describe the picture with positions of the objects?",
    "Narrate the image, giving the location of each item.",
    "Describe the image content and point to each object.",
    "Caption this picture with boxes for the objects.",
    "Give an overview of the image, with object coordinates.",
    "Describe everything you see, with a box for each object.",
    "Please give a description of the image that grounds the objects in it.",
    "What does the image show? Give positions as [x0, y0, x1, y1].",
    "Describe the image and show where each mentioned object is.",
    "Write one sentence about the image and box each object in it.",
    "Provide a localized description of the picture.",
)
_GROUNDED_CAPTION_A = ("{caption}",)

_VIDEO_GROUNDING_Q = (
    'When does "{query}" happen in the video?',
    "At what time does the following happen: {query}?",
    "Please give me the timestamp when {query}.",
    "Find the moment in the video when {query}.",
    "At what point in the video is it true that {query}?",
    "Locate the segment where {query}.",
    "Give the start and end of the part where {query}.",
    "In which part of the video does this happen: {query}?",
    "Tell me when this occurs: {query}.",
    'Find the time span for the event "{query}".',
    "When in the clip do we see that {query}?",
    "Ground this sentence in time: {query}.",
    'What is the time interval of "{query}"?',
    "Identify the moment described by: {query}.",
    "Which segment shows that {query}?",
    "Output the {{start, end}} of the event: {query}.",
    "Detect when the following event happens: {query}.",
    "Point out the time when {query}.",
    "Which portion of the video shows that {query}?",
    "Give me the timestamps for: {query}.",
    'Find the clip segment matching "{query}".',
    "When exactly can we see that {query}?",
    "Localize this event in the video: {query}.",
    "At which moment can we see that {query}?",
    "Provide the time window in which {query}.",
    "Retrieve the moment: {query}.",
    "From when to when do we see that {query}?",
    "Show me the part of the video where {query}.",
    "Give the time boundaries of: {query}.",
    "When can this be seen: {query}?",
    'Tell me the start and end of "{query}".',
    "Search the video for the moment when {query}.",
)
_TEMPORAL_A = (
    "{where}",
    "{where}.",
    "It happens at {where}.",
    "The event occurs during {where}.",
    "This takes place in {where}.",
    "You can find it at {where}.",
    "At {where}.",
    "The moment is {where}.",
)

_AUDIO_GROUNDING_Q = (
    'When does "{query}" happen in the audio?',
    "At what time can you hear this: {query}?",
    "When in the recording do we hear that {query}?",
    "Find the moment in the audio when {query}.",
    "Give the start and end of the sound: {query}.",
    "Locate the segment of the recording where {query}.",
    "In which part of the clip does this sound occur: {query}?",
    "Tell me when this can be heard: {query}.",
    'Find the time span of "{query}" in the audio.',
    "When in the recording can you tell that {query}?",
    "Ground this sound in time: {query}.",
    'What is the time interval of "{query}"?',
    "Identify when the following is audible: {query}.",
    "During which segment of the audio do we hear that {query}?",
    "Output the {{start, end}} of the sound: {query}.",
    "Detect when this happens in the audio: {query}.",
    "Point out the time when {query}.",
    "Which portion of the recording is the one where {query}?",
    "Give me the timestamps for: {query}.",
    "Listen and tell me when {query}.",
    "When exactly is it heard that {query}?",
    "Localize this sound event: {query}.",
    "At which moment do we hear that {query}?",
    "Provide the time window in which {query}.",
    "From when to when can we hear that {query}?",
    "Find the part of the audio where {query}.",
    'Give the time boundaries of the sound "{query}".',
    "When can this be heard: {query}?",
    'Tell me the onset and offset of "{query}".',
    "Search the recording for the moment when {query}.",
    "At what point in the clip do we hear that {query}?",
    "Mark the time span of: {query}.",
)

_SOUND_LOCALIZATION_Q = (
    "Where is the sound's point of emission in this image? Include the object positions in [x0, y0, x1, y1] format.",
    "Which object in the image makes the sound?",
    "Locate the source of the sound in the picture.",
    "Where does the sound come from in this image?",
    "Find the sounding object and give its box.",
    "Point to what is producing the sound.",
    "Which region of the image is making this noise?",
    "Give the bounding box of the sound source.",
    "What in the picture is emitting the sound, and where is it?",
    "Show me the object that is heard in the audio.",
    "Localize the sound source in the image.",
    "Where in the image is the origin of the sound?",
    "Match the sound to an object in the image and give its position.",
    "Which thing in the photo do we hear? Give its coordinates.",
    "Find where the audio is coming from.",
    "Identify and locate the object that makes this sound.",
    "What is making the sound? Answer with its box.",
    "Mark the sound-emitting region in the image.",
    "Listen to the audio and locate its source in the picture.",
    "Where is the thing that produces the sound you hear?",
    "Box the source of the sound.",
    "Which part of the picture does the sound belong to?",
    "Tell me which object is sounding and where it is.",
    "Ground the sound in the image.",
    "Can you find the sounding object in this image?",
    "Locate the audible object in the scene.",
    "Point out the source of the noise, with coordinates.",
    "Where is the sound source located in the picture?",
    "Detect the object responsible for the sound.",
    "Give the position of what we hear in the image.",
    "What object emits the sound, and where is it in the image?",
    "Using both the sound and the picture, locate the source.",
)
_SOUND_LOCALIZATION_A = (
    "{located}",
    "The sound comes from the {located}.",
    "The sound is emitted by the {located}.",
    "It is the {located}.",
    "The source is the {located}.",
    "You can hear the {located}.",
)

# Questions first written for absent phrases. REC asks them too and negatives ask REC's: one pool
# (_GROUNDING_Q), so the wording says nothing of the answer. When "Is there ...?" was asked of absent
# phrases only, the model declined on the wording (41 of 41 such test questions, 57 of 67 others).
_PRESENCE_Q = (
    "Is there {a_phrase} in the image?",
    "Can you find {a_phrase} in this picture?",
    "Does the image contain {a_phrase}?",
    "Find the {phrase} in the image.",
    "Is {a_phrase} visible here?",
    "Show me the {phrase}.",
    "Point out the {phrase}, if there is one.",
    "Do you see {a_phrase}?",
    "Is there any {phrase} in the photo?",
    "Where can I find the {phrase} in this image?",
    "Can you locate {a_phrase}?",
    "Detect {a_phrase} in the picture.",
    "Is {a_phrase} present in the scene?",
    "Does this picture show {a_phrase}?",
    "Find {a_phrase} and give its position.",
    "Is there something like {a_phrase} here?",
    "Please locate the {phrase} in the image.",
    "Can you spot {a_phrase}?",
    "Tell me where the {phrase} is.",
    "Look for {a_phrase} in this image.",
    "Is {a_phrase} anywhere in the picture?",
    "Highlight the {phrase}.",
    "Is the image showing {a_phrase} anywhere?",
)
_GROUNDING_Q = _REC_Q + tuple(q for q in _PRESENCE_Q if q not in _REC_Q)
_NEGATIVE_A = (
    "No, there is no {phrase} in the image.",
    "There is no {phrase} in this image.",
    "I cannot find {a_phrase} in the image.",
    "The image does not contain {a_phrase}.",
    "No {phrase} is visible.",
    "Sorry, no {phrase} appears in this picture.",
)

# Span given, event asked: used inside stage-3 dialogues (the answer slot is the event's clause).
_VIDEO_EVENT_Q = (
    "What happens in the video during {where}?",
    "What takes place at {where}?",
    "Describe the event at {where}.",
    "What can be seen during {where}?",
    "What is going on in the segment {where}?",
    "Tell me what happens at {where}.",
    "What does the video show during {where}?",
    "Which event happens in {where}?",
    "Describe what you see in the part {where}.",
    "What occurs between the times {where}?",
    "Summarize the segment {where}.",
    "What is happening in the clip at {where}?",
    "Caption the moment {where}.",
    "What changes during {where}?",
    "Explain the event in the interval {where}.",
    "Look at {where}. What happens there?",
    "What event spans {where}?",
    "Give a short description of the segment {where}.",
    "What does the segment {where} contain?",
    "Can you describe what happens at {where}?",
    "Which action takes place during {where}?",
    "What is shown in the time window {where}?",
    "Name the event that occurs at {where}.",
    "Please describe the part of the video at {where}.",
    "What would you say happens during {where}?",
    "Describe the content of the clip in {where}.",
    "What is visible during {where}?",
    "Tell me about the moment {where}.",
    "Which event does the span {where} cover?",
    "What do we see in the video at {where}?",
    "During {where}, what happens?",
    "Identify the event at {where}.",
)
_AUDIO_EVENT_Q = (
    "What can be heard during {where}?",
    "What sound is audible at {where}?",
    "Describe the sound at {where}.",
    "What happens in the audio during {where}?",
    "What do you hear in the segment {where}?",
    "Tell me what is heard at {where}.",
    "Which sound occurs in {where}?",
    "What is going on in the recording at {where}?",
    "Describe the audio in the part {where}.",
    "What occurs between the times {where}?",
    "Summarize the segment {where} of the recording.",
    "What sound fills the interval {where}?",
    "Caption the sound at {where}.",
    "What is audible during {where}?",
    "Explain what is heard in {where}.",
    "Listen to {where}. What do you hear?",
    "Which sound event spans {where}?",
    "Give a short description of the audio at {where}.",
    "What does the segment {where} contain?",
    "Can you describe the sound at {where}?",
    "Which event can be heard during {where}?",
    "What is in the time window {where} of the audio?",
    "Name the sound that occurs at {where}.",
    "Please describe the recording at {where}.",
    "What would you say is heard during {where}?",
    "Identify the sound at {where}.",
    "What is the source of the sound at {where}?",
    "Tell me about the moment {where} in the audio.",
    "Which sound does the span {where} cover?",
    "What do we hear at {where}?",
    "During {where}, what can be heard?",
    "What is said or heard at {where}?",
)
_EVENT_A = (
    "{Query}.",
    "During that time, {query}.",
    "In that segment, {query}.",
    "Then {query}.",
    "At that moment {query}.",
    "That is when {query}.",
)

TEMPLATES: dict[str, TaskTemplates] = {
    "caption_image": TaskTemplates("caption", 1, _CAPTION_IMAGE_Q, _CAPTION_A),
    "caption_video": TaskTemplates("caption", 1, _CAPTION_VIDEO_Q, _CAPTION_A),
    "caption_audio": TaskTemplates("caption", 1, _CAPTION_AUDIO_Q, _CAPTION_A),
    "rec": TaskTemplates("rec", 2, _GROUNDING_Q, _REC_A),
    "reg": TaskTemplates("reg", 2, _REG_Q, _REG_A),
    "grounded_caption": TaskTemplates("grounded_caption", 2, _GROUNDED_CAPTION_Q, _GROUNDED_CAPTION_A),
    "video_grounding": TaskTemplates("video_grounding", 2, _VIDEO_GROUNDING_Q, _TEMPORAL_A),
    "audio_grounding": TaskTemplates("audio_grounding", 2, _AUDIO_GROUNDING_Q, _TEMPORAL_A),
    "sound_localization": TaskTemplates("sound_localization", 2, _SOUND_LOCALIZATION_Q, _SOUND_LOCALIZATION_A),
    "negative": TaskTemplates("negative", 2, _GROUNDING_Q, _NEGATIVE_A),
    "video_event": TaskTemplates("dialogue", 3, _VIDEO_EVENT_Q, _EVENT_A),
    "audio_event": TaskTemplates("dialogue", 3, _AUDIO_EVENT_Q, _EVENT_A),
}

# Openers for the 2nd, 3rd... question of a dialogue, so later turns read as follow-ups.
FOLLOW_UPS = (
    "",
    "And ",
    "Also, ",
    "Next, ",
    "Now, ",
    "One more thing: ",
    "Thanks. ",
    "Great. ",
    "OK. ",
    "Another question: ",
    "What about this: ",
    "Then, ",
)


# --------------------------------------------------------------------------------------------------


def article(phrase: str) -> str:
    """`a`/`an` by the first letter; good enough for template English."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)


def _where(items: Sequence[Box | Span]) -> str:
    return "".join(format_box(i) if isinstance(i, Box) else format_span(i) for i in items)


def _slots(slots: dict) -> dict:
    out = dict(slots)
    items = list(out.pop("items", ()) or ())
    phrase = _LEADING_ARTICLE.sub("", str(out.get("phrase", "")).strip())
    out["phrase"] = phrase
    out["Phrase"] = phrase[:1].upper() + phrase[1:]
    out["a_phrase"] = f"{article(phrase)} {phrase}" if phrase else ""
    out["where"] = _where(items)
    out["located"] = ground_phrase(phrase, items)
    out.setdefault("query", "")
    out.setdefault("caption", "")
    out["query"] = str(out["query"]).strip().rstrip(".?!")
    out["Query"] = out["query"][:1].upper() + out["query"][1:]
    return out


def render(task: str, rng: random.Random, **slots) -> tuple[str, str]:
    """(question, answer) for `task`, phrasing picked by `rng`; see the module docstring for slots."""
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TEMPLATES)}")
    t = TEMPLATES[task]
    values = _slots(slots)
    question = rng.choice(t.questions).format(**values)
    answer = rng.choice(t.answers).format(**values)
    return question, answer


def _decline_pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{a_phrase\}", r"an?\s+(?P<phrase>.+?)")
    return re.compile(body.replace(r"\{phrase\}", r"(?P<phrase>.+?)"), re.IGNORECASE)


_DECLINES = tuple(_decline_pattern(t) for t in _NEGATIVE_A)


def decline_phrase(answer: str) -> str | None:
    """The phrase an answer declines, when the whole answer is one of the negatives' forms ("There is no red
    mug in this image." -> "red mug"); None for any other answer. What a model trained on these says when it
    finds nothing, read back (`OmniGround.overrule_declines`)."""
    text = answer.strip()
    for pattern in _DECLINES:
        if m := pattern.fullmatch(text):
            return m.group("phrase")
    return None


_DECLINE_OPENINGS = tuple(dict.fromkeys(t.split("{")[0].lower() for t in _NEGATIVE_A))


def might_decline(start: str) -> bool:
    """Whether an answer that starts so may still be one of the negatives' declines: the start is part of a
    decline's opening words, or opens with them. What a streamed answer holds back, so that a decline can
    still be checked before it is shown (`omniground.serve.generation`)."""
    text = start.lstrip().lower()
    return any(opening.startswith(text) or text.startswith(opening) for opening in _DECLINE_OPENINGS)


def dialogue(items: Iterable[tuple[str, dict]], rng: random.Random) -> list[tuple[str, str]]:
    """Several grounded Q/A turns about one media: each item is (task, slots); later questions read as follow-ups."""
    pairs = []
    for n, (task, slots) in enumerate(items):
        q, a = render(task, rng, **slots)
        if n > 0:
            opener = rng.choice(FOLLOW_UPS)
            if opener.endswith(". "):  # a sentence of its own: the question keeps its capital
                q = opener + q
            elif opener:
                q = opener + q[:1].lower() + q[1:]
        pairs.append((q, a))
    return pairs


def grounded_text(parts: Iterable[str | tuple[str, Sequence[Box | Span]]]) -> str:
    """Join plain strings and (phrase, items) pairs into one text, e.g. a grounded caption."""
    return "".join(p if isinstance(p, str) else ground_phrase(p[0], p[1]) for p in parts)


def with_placeholders(question: str, media_types: Sequence[str]) -> str:
    """Media placeholders first, one per media in order, then the question (the original's layout)."""
    return "".join(PLACEHOLDER[m] + "\n" for m in media_types) + question


def conversation(pairs: Sequence[tuple[str, str]], media_types: Sequence[str]) -> list[dict]:
    """Schema turns (dicts for `Sample(conversation=...)`); placeholders go in the first user turn."""
    turns = []
    for n, (q, a) in enumerate(pairs):
        turns.append({"role": "user", "content": with_placeholders(q, media_types) if n == 0 else q})
        turns.append({"role": "assistant", "content": a})
    return turns


def stage_of(task: str) -> int:
    return TEMPLATES[task].stage
