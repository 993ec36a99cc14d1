"""Reference for examples/load_bench.sh: the two benchmarked endpoints written the way the
original Python service did them (FastAPI, sync SQLAlchemy sessions on SQLite, HS256
JWT). Run under uvicorn with 4 workers, uvloop and httptools, as production did.
Not product code; it exists to measure against.
"""
import os
import time

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import Column, Integer, String, create_engine, text
from sqlalchemy.orm import declarative_base, sessionmaker

DB = os.environ.get("REF_DB", "./ref.db")
SECRET = os.environ.get("JWT_SECRET", "reference-secret-reference-secret-xx")
engine = create_engine(f"sqlite:///{DB}", connect_args={"check_same_thread": False}, pool_size=20)
Session = sessionmaker(bind=engine)
Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    username = Column(String, unique=True)
    email = Column(String, unique=True)
    full_name = Column(String)
    role = Column(String)


Base.metadata.create_all(engine)
with Session() as s:
    if not s.get(User, 1):
        s.add(User(id=1, username="bench", email="bench@example.com", full_name="Bench", role="CLIENT"))
        s.commit()

app = FastAPI()


def get_db():
    db = Session()
    try:
        yield db
    finally:
        db.close()


@app.get("/health")
async def health():
    # As the original: a connection check and pool stats on every call.
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
    return {
        "status": "healthy",
        "version": "1.0.0",
        "timestamp": time.time(),
        "database": {"status": "connected", "pool_stats": {"size": engine.pool.size()}},
    }


@app.get("/api/auth/me")
def me(authorization: str = Header(None), db=Depends(get_db)):
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "Not authenticated")
    try:
        claims = jwt.decode(authorization[7:], SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise HTTPException(401, "Could not validate credentials")
    user = db.get(User, int(claims["sub"]))
    if not user:
        raise HTTPException(401, "Could not validate credentials")
    return {"id": user.id, "username": user.username, "email": user.email,
            "full_name": user.full_name, "role": user.role}


if __name__ == "__main__":
    print(jwt.encode({"sub": "1", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"))
