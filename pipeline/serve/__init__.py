"""The web app (004's "make a web app"): speak or drop a file, see the face and who is nearest.

- :mod:`pipeline.serve.engine`: the trained models behind one small interface (the only
  module that knows how models are loaded and run);
- :mod:`pipeline.serve.gallery`: the enrolled people in an embedded SQLite database;
- :mod:`pipeline.serve.enrol`: a face crop from a photo or a video, through the faces
  stage's own code;
- :mod:`pipeline.serve.ranking`: per model, the people's face and voice vectors and the
  nearest to a query;
- :mod:`pipeline.serve.limits`: the bounded inference queue and the request size limit;
- :mod:`pipeline.serve.app`: the FastAPI application and its static page.
"""
